"""Rollout documents (bucket ranges per track), analysis judgement from metrics, the shadow tally."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.operator.decisions.analysis import Sample, judge, sample, totals
from alertpipe.operator.decisions.shadow import tally
from alertpipe.operator.decisions.tracks import (
    candidate_deployment,
    splittable,
    track_documents,
    warmup_ms,
)
from alertpipe.operator.rollout_models import AnalysisSpec, CanaryStatus, Handover, RolloutSpec
from alertpipe.workers.config import PipelineConfig, RuleEntry, RuleSpec, alert_filter, bucket_of, key_filter

pytestmark = pytest.mark.unit


def rule(name: str, cond: str = "value > 80", by: list[str] | None = None) -> RuleEntry:
    return RuleEntry(name=name, spec=RuleSpec.model_validate(
        {"threshold": {"condition": cond}, "by": by or ["deviceId"]}))


def config(rules: list[RuleEntry]) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "tenant": "t", "pipeline": "p", "allowedLateness": "1s",
        "kafka": {"bootstrapServers": "x:1", "topics": {
            "events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u", "repartition": "r"}},
        "redis": {"url": "redis://x", "keyPrefix": "t:p:"}, "rules": rules,
    }).with_revision()


OLD, NEW = [rule("hot")], [rule("hot", "value > 90")]
ROLLOUT = RolloutSpec.model_validate({"steps": [{"weight": 10}, {"weight": 50}]})


def status(phase: str, weight: int = 0, handover: dict[str, Any] | None = None) -> CanaryStatus:
    return CanaryStatus.model_validate({
        "phase": phase, "weight": weight, "candidateRevision": config(NEW).rules_revision(),
        "stableRevision": config(OLD).rules_revision(),
        "handover": handover and Handover.model_validate(handover)})


def owners(stable: PipelineConfig, cand: PipelineConfig | None, key: str, at: int) -> list[str]:
    """Which tracks publish a transition of ``key`` at event time ``at``."""
    out = []
    for name, cfg in (("stable", stable), ("candidate", cand)):
        if cfg is None:
            continue
        kf, af = key_filter(cfg.track), alert_filter(cfg.track)
        evaluates = kf is None or kf(key)
        publishes = af is None or af({"labels": {"deviceId": key}, "eventTimeMs": at})
        if evaluates and publishes:
            out.append(name)
    return out


def test_no_rollout_or_no_stable_yet_means_one_document_with_the_compiled_rules() -> None:
    cfg = config(NEW)
    assert track_documents(cfg, OLD, None, None) == (cfg, None)
    stable, cand = track_documents(cfg, None, None, ROLLOUT)
    assert stable.rules == NEW and cand is None


def test_a_pending_rollout_keeps_the_stable_rules() -> None:
    stable, cand = track_documents(config(NEW), OLD, None, ROLLOUT)
    assert stable.rules == OLD and stable.track is None and cand is None
    # a stable track without rules has nothing to compare with: the first rules apply at once
    stable, cand = track_documents(config(NEW), [], None, ROLLOUT)
    assert stable.rules == NEW and cand is None


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30), st.sampled_from([10, 50]),
       st.integers(-5, 5))
def test_every_key_has_exactly_one_publisher_at_every_point(keys: list[str], w: int, dt: int) -> None:
    cut = 1_000_000
    cfg = config(NEW)
    points = [status("Progressing", w), status("Progressing", w, {"kind": "advance", "fromWeight": 10,
                                                                  "toWeight": 50, "cutMs": cut, "doneMs": 1}),
              status("Promoting", 100, {"kind": "toCandidate", "fromWeight": 50, "toWeight": 100,
                                        "cutMs": cut, "doneMs": 1}),
              status("Promoting", 100, {"kind": "toStable", "fromWeight": 0, "toWeight": 100,
                                        "cutMs": cut, "doneMs": 1})]
    for s in points:
        stable, cand = track_documents(cfg, OLD, s, ROLLOUT)
        assert cand is not None
        for k in keys:
            assert len(owners(stable, cand, k, cut + dt)) == 1, (s.phase, s.handover, k)


def test_weight_split_and_candidate_isolation() -> None:
    stable, cand = track_documents(config(NEW), OLD, status("Progressing", 10), ROLLOUT)
    assert cand is not None and cand.track is not None and stable.track is not None
    assert stable.rules == OLD and cand.rules == NEW
    assert [(r.start, r.end) for r in cand.track.ranges] == [(0, 1000)]
    assert [(r.start, r.end) for r in stable.track.ranges] == [(1000, 10_000)]
    assert cand.redis.key_prefix.startswith("t:p:canary-") and cand.track.start_at == "latest"
    assert cand.kafka.topics.repartition == "r-candidate" and cand.kafka.topics.alerts == "a"
    assert cand.track.consumer_group and cand.track.consumer_group.endswith(cand.redis.key_prefix[11:19])
    # a device in bucket < 1000 goes to the candidate
    key = next(f"d{i}" for i in range(1000) if bucket_of(f"d{i}") < 1000)
    assert owners(stable, cand, key, 5) == ["candidate"]


def test_shadow_sends_every_key_to_the_shadow_topic() -> None:
    r = RolloutSpec.model_validate({"strategy": "shadow-then-canary"})
    stable, cand = track_documents(config(NEW), OLD, status("Shadow"), r)
    assert cand is not None and cand.track is not None and cand.track.shadow
    assert key_filter(cand.track) is None and stable.track is None
    assert cand.kafka.topics.alerts == cand.kafka.topics.late == cand.kafka.topics.dead_letter == "a-shadow"


def test_rolled_back_candidate_leaves_stable_alone_and_promoted_one_is_stable() -> None:
    stable, cand = track_documents(config(NEW), OLD, status("RolledBack"), ROLLOUT)
    assert stable.rules == OLD and stable.track is None and cand is None
    done = status("Succeeded").model_copy(update={"stable_revision": config(NEW).rules_revision()})
    stable, cand = track_documents(config(NEW), OLD, done, ROLLOUT)
    assert stable.rules == NEW and cand is None


def test_splittable_and_warmup() -> None:
    assert splittable(NEW) and not splittable([rule("site", by=["site"])])
    assert warmup_ms(ROLLOUT, config(NEW)) == 10_000
    agg = RuleEntry(name="avg", spec=RuleSpec.model_validate(
        {"aggregate": {"fn": "avg", "field": "v", "window": "1m", "condition": "value > 1"}}))
    assert warmup_ms(ROLLOUT, config([agg])) == 121_000
    assert warmup_ms(RolloutSpec.model_validate({"warmup": "3s"}), config([agg])) == 3000


def test_candidate_deployment_has_its_own_selector_and_config() -> None:
    stable = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "p-evaluator", "namespace": "t", "labels": {},
                           "annotations": {"alertpipe.io/desired-hash": "x"}},
              "spec": {"replicas": 2,
                       "selector": {"matchLabels": {"app.kubernetes.io/component": "evaluator"}},
                       "template": {"metadata": {"labels": {}}, "spec": {"containers": [
                           {"name": "evaluator", "command": ["alertpipe", "evaluator", "--config",
                                                             "configmap:t/p-config"]}]}}}}
    dep = candidate_deployment(stable, "p", 3)
    assert dep["metadata"]["name"] == "p-evaluator-canary" and dep["spec"]["replicas"] == 3
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel["app.kubernetes.io/component"] == "evaluator-canary"
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "configmap:t/p-config-canary"
    assert dep["metadata"]["annotations"]["alertpipe.io/desired-hash"] != "x"


METRICS = """# TYPE alertpipe_evaluator_events_consumed_total counter
alertpipe_evaluator_events_consumed_total{{tenant="t"}} {consumed}
alertpipe_evaluator_events_evaluated_total{{tenant="t"}} {evaluated}
alertpipe_evaluator_alerts_total{{tenant="t",rule="hot",status="firing"}} {alerts}
alertpipe_evaluator_consumer_lag_messages{{partition="0"}} 7
# TYPE alertpipe_evaluator_event_to_alert_seconds histogram
alertpipe_evaluator_event_to_alert_seconds_bucket{{basis="ingest_time",le="0.1"}} {fast}
alertpipe_evaluator_event_to_alert_seconds_bucket{{basis="ingest_time",le="5.0"}} {alerts}
alertpipe_evaluator_event_to_alert_seconds_bucket{{basis="ingest_time",le="+Inf"}} {alerts}
alertpipe_evaluator_event_to_alert_seconds_count{{basis="ingest_time"}} {alerts}
"""


def text(consumed: int, evaluated: int, alerts: int, fast: int) -> str:
    return METRICS.format(consumed=consumed, evaluated=evaluated, alerts=alerts, fast=fast)


def test_metrics_sum_over_pods_and_deltas_give_the_interval() -> None:
    t0 = totals([text(100, 10, 2, 2), text(100, 10, 0, 0)])
    t1 = totals([text(300, 30, 12, 2), text(300, 30, 0, 0)])
    s = sample(t0, t1)
    assert (s.pods, s.consumed, s.evaluated, s.alerts, s.lag) == (2, 400, 40, 10, 14)
    assert s.p99 is not None and 4.0 < s.p99 <= 5.0  # all 10 new alerts were slow


def test_judge_names_the_metric_and_value() -> None:
    spec = AnalysisSpec.model_validate({"maxEventToAlertP99": "1s", "maxAlertRatio": 3})
    slow = Sample(pods=1, consumed=100, evaluated=50, alerts=5, p99=4.5)
    res = judge(spec, None, slow, "now")
    assert res.verdict == "fail" and res.message.startswith("maxEventToAlertP99: 4.5s > 1s")
    stable = Sample(pods=1, consumed=100, evaluated=450, alerts=4)
    noisy = Sample(pods=1, consumed=100, evaluated=50, alerts=40, p99=0.01)
    res = judge(spec, stable, noisy, "now")
    assert res.verdict == "fail" and res.message.startswith("maxAlertRatio:")
    fine = Sample(pods=1, consumed=100, evaluated=50, alerts=0, p99=0.01)
    assert judge(spec, stable, fine, "now").verdict == "pass"


def test_silence_is_no_data() -> None:
    spec = AnalysisSpec()
    assert judge(spec, None, None, "now").verdict == "noData"
    assert judge(spec, None, Sample(pods=0), "now").verdict == "noData"
    assert judge(spec, None, Sample(pods=1, consumed=0), "now").verdict == "noData"


def alert(i: str, status: str, rule: str = "hot", at: int = 50) -> dict[str, Any]:
    return {"id": i, "status": status, "rule": rule, "eventTimeMs": at, "startsAtMs": at}


def test_shadow_tally_by_rule_with_examples_and_window() -> None:
    old_episode = {**alert("y", "resolved", at=50), "startsAtMs": 5}  # opened before the comparison
    stable = [alert("a", "firing"), alert("a", "resolved"), alert("b", "firing"), alert("z", "firing", at=5),
              old_episode, alert("late", "firing", at=100)]
    cand = [alert("a", "firing"), alert("a", "resolved"), alert("c", "firing", "cold")]
    d = tally(stable, cand, since=10, until=100)
    assert (d.both, d.only_stable, d.only_candidate, d.differing) == (2, 1, 1, 2)
    assert d.by_rule["hot"].only_stable == 1 and d.by_rule["cold"].only_candidate == 1
    assert "only-stable hot b firing" in d.examples and "only-candidate cold c firing" in d.examples
    assert tally(stable, stable, 10, 100).differing == 0


def test_configured_checks_that_cannot_be_judged_are_no_data_not_a_pass() -> None:
    spec = AnalysisSpec.model_validate({"maxEventToAlertP99": "1s", "maxAlertRatio": 3})
    quiet = Sample(pods=1, consumed=100, evaluated=3, alerts=0, p99=None)
    res = judge(spec, Sample(pods=1, consumed=100, evaluated=97), quiet, "now")
    assert res.verdict == "noData" and "too little traffic" in res.message
    assert judge(AnalysisSpec(), None, quiet, "now").verdict == "pass"  # nothing asked, it ran


def test_an_image_change_is_a_candidate_and_reaches_stable_only_with_the_promotion() -> None:
    from alertpipe.operator.decisions.tracks import pinned_image, revision

    rules = config(OLD).rules_revision()
    assert revision(rules, "img:1") != revision(rules, "img:2") and revision(rules, None) == rules
    cand = revision(rules, "img:2")
    base: dict[str, Any] = {"candidateRevision": cand, "stableRevision": revision(rules, "img:1")}
    # no rollout, a new pipeline, or nothing changed: the spec's image
    assert pinned_image("img:2", "img:1", None, None, cand) == "img:2"
    assert pinned_image("img:2", None, None, ROLLOUT, cand) == "img:2"
    assert pinned_image("img:1", "img:1", None, ROLLOUT, cand) == "img:1"
    # pending, running, rolled back: the live one
    for phase in ("Progressing", "RolledBack", "Aborted"):
        st = CanaryStatus.model_validate({**base, "phase": phase, "weight": 10})
        assert pinned_image("img:2", "img:1", st, ROLLOUT, cand) == "img:1", phase
    assert pinned_image("img:2", "img:1", None, ROLLOUT, cand) == "img:1"
    # the promotion's second handover, and after it
    back = CanaryStatus.model_validate({**base, "phase": "Promoting", "weight": 100, "handover": {
        "kind": "toStable", "fromWeight": 0, "toWeight": 100, "cutMs": 1, "doneMs": 2}})
    assert pinned_image("img:2", "img:1", back, ROLLOUT, cand) == "img:2"
    done = CanaryStatus.model_validate({**base, "phase": "Succeeded", "stableRevision": cand})
    assert pinned_image("img:2", "img:1", done, ROLLOUT, cand) == "img:2"
    stable = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "p-evaluator", "namespace": "t", "labels": {}, "annotations": {}},
              "spec": {"replicas": 1, "selector": {"matchLabels": {}}, "template": {
                  "metadata": {"labels": {}},
                  "spec": {"containers": [{"name": "evaluator", "image": "img:1", "command": []}]}}}}
    assert candidate_deployment(stable, "p", 1, "img:2")["spec"]["template"]["spec"]["containers"][0][
        "image"] == "img:2"


def test_kill_switches_reach_both_tracks_at_once() -> None:
    from alertpipe.workers.config import KillSwitch, KillSwitches

    cfg = config(NEW).model_copy(update={"kill_switches": KillSwitches(
        stop_evaluation=KillSwitch(reason="incident"))}).with_revision()
    stable, cand = track_documents(cfg, OLD, status("Progressing", 10), ROLLOUT)
    assert cand is not None
    assert stable.kill_switches.stop_evaluation is not None and cand.kill_switches.stop_evaluation is not None
    assert stable.rules == OLD  # the switch is not rolled out, the rules are
