# mypy: disable-error-code="union-attr, index, arg-type"
"""Canary rollouts on the devstack: operator, pod runner, real Kafka and Redis, events flowing.

A rule change is rolled out 10 % → 50 % → 100 % (each step a handover with a warm-up) while 40
devices send events; afterwards the alerts topic holds, per device, exactly the transitions a
single-track control run produces for the same events: none lost, none doubled at a step boundary.
A bad candidate (a rule that fires three times as often) is rolled back by the analysis and the
stable track keeps paging for the canary's devices.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from alertpipe.workers.config import bucket_of
from devstack.pipeline import condition, wait_for
from devstack.pytest_plugin import LocalPods
from devstack.rollout_load import (
    RULE,
    EventLoad,
    Setup,
    alerts_on,
    expected,
    per_device,
    replace_rule,
    settle,
    start,
)

pytestmark = pytest.mark.e2e

API_KEY = "canary-key-0123456789abcdef"
ROLLOUT = {
    "steps": [{"weight": 10, "pause": "2s"}, {"weight": 50, "pause": "2s"}],
    "warmup": "3s",
    "analysis": {"interval": "2s", "failureLimit": 1, "onNoData": "pause", "maxAlertRatio": 2},
}


@contextmanager
def rolling(api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
            kafka_bootstrap: str, redis_url: str, rollout: dict[str, object],
            ) -> Iterator[tuple[Setup, EventLoad]]:
    """A pipeline with `rollout` under a running event load (10 rounds sent); the load stops after."""
    s, ingestor = start(api, namespace, kafka_bootstrap, redis_url, pod_runner.node_selector, operator,
                        API_KEY, rollout)
    load = EventLoad(ingestor, API_KEY, namespace).start()
    try:
        wait_for(lambda: load.rounds >= 10, "events flowing", 30)
        yield s, load
    finally:
        load.stop()


def await_phase(s: Setup, operator: Path, phases: tuple[str, ...], what: str, timeout: float) -> None:
    """Wait for the canary to reach one of `phases`; on time-out fail with the phases seen and the
    operator's log."""
    try:
        wait_for(lambda: s.watch_phase().get("phase") in phases, what, timeout, every=0.2)
    except AssertionError:
        raise AssertionError(f"{s.phases}\n{operator.read_text()[-4000:]}") from None


def test_rule_change_rolls_out_10_50_100_without_losing_or_doubling_an_alert(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:
    with rolling(api, namespace, operator, pod_runner, kafka_bootstrap, redis_url, ROLLOUT) as (s, load):
        topic = s.config()["kafka"]["topics"]["alerts"]
        replace_rule(s, "value > 80", "v2 {{ value }}")  # same verdicts, a new revision
        await_phase(s, operator, ("Succeeded",), "the rollout to succeed", 180)
        wait_for(lambda: load.rounds >= 10 + 15, "events after promotion", 30)
    assert [p for p, _ in s.phases if p == "Progressing"] and ("Progressing", 10) in s.phases
    assert ("Progressing", 50) in s.phases and ("Promoting", 100) in s.phases, s.phases
    # status.canary is written first; the next reconcile turns it into the stable ConfigMap
    wait_for(lambda: s.config().get("track") is None, "the stable track to own every bucket", 30)
    stable = s.config()
    assert stable["rules"][0]["spec"]["annotations"]["summary"].startswith("v2")
    want = expected(load.sent, namespace, "edge", RULE)
    got = per_device(settle(kafka_bootstrap, topic, sum(want.values())))
    missing, doubled = want - got, got - want
    assert not missing and not doubled, (f"missing {sorted(missing)[:5]} doubled {sorted(doubled)[:5]}",
                                         s.phases)
    # both revisions wrote alerts: the candidate's (v2) for its keys during the steps, v1 before
    summaries = {a["annotations"]["summary"][:2] for a in alerts_on(kafka_bootstrap, topic)}
    assert summaries == {"v1", "v2"}
    # the canary track is gone
    wait_for(lambda: not s.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=evaluator-canary").items,
        "the candidate pods gone", 60)


def test_a_noisy_candidate_is_rolled_back_and_stable_keeps_paging(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:
    with rolling(api, namespace, operator, pod_runner, kafka_bootstrap, redis_url, ROLLOUT) as (s, load):
        topic = s.config()["kafka"]["topics"]["alerts"]
        replace_rule(s, "value % 2 == 1", "bad {{ value }}")  # fires and resolves on every event
        await_phase(s, operator, ("RolledBack",), "the rollback", 180)
        rolled_back = time.time() * 1000
        cond = condition(s.co, namespace, "edge", "Canary")
        assert cond is not None and (cond["status"], cond["reason"]) == ("False", "RolledBack")
        assert "maxAlertRatio" in cond["message"], cond
        # The Event is posted after the status write that said RolledBack.
        wait_for(lambda: any(e.reason == "RolledBack" and "maxAlertRatio" in (e.message or "")
                             for e in s.core.list_namespaced_event(namespace).items),
                 "the RolledBack Event", 30, every=0.5)
        wait_for(lambda: not s.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=evaluator-canary").items,
            "the candidate scaled away", 60)
        assert s.config()["rules"][0]["spec"]["threshold"]["condition"] == "value > 80"
        at_rollback = load.rounds
        wait_for(lambda: load.rounds >= at_rollback + 40, "events after the rollback", 60)
    canary_devices = {d for d in load.devices if bucket_of(d) < 1000}
    assert canary_devices, "no device in the first 10 % of buckets"
    after = [a for a in settle(kafka_bootstrap, topic, 1)
             if a["labels"]["deviceId"] in canary_devices and a["eventTimeMs"] > rolled_back + 5000]
    assert after and all(a["annotations"]["summary"].startswith("v1") for a in after)


SHADOW = {**ROLLOUT, "strategy": "shadow-then-canary", "shadow": {"duration": "12s"}}


def test_shadow_reports_no_diff_for_a_no_op_change_and_a_real_one_for_a_changed_condition(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:
    with rolling(api, namespace, operator, pod_runner, kafka_bootstrap, redis_url, SHADOW) as (s, load):
        replace_rule(s, "value > 80", "v2 {{ value }}")  # no-op for verdicts
        await_phase(s, operator, ("Progressing", "WaitingForPromote"), "the shadow phase to end", 120)
        assert ("Shadow", 0) in s.phases, s.phases
        clean = s.canary()
        assert clean["phase"] == "Progressing", clean
        assert clean["shadowDiff"]["both"] > 0 and not clean["shadowDiff"]["examples"], clean["shadowDiff"]
        assert clean["shadowDiff"]["onlyStable"] == clean["shadowDiff"]["onlyCandidate"] == 0
        # the candidate's shadow alerts went to the shadow topic
        shadow = alerts_on(kafka_bootstrap, s.config()["kafka"]["topics"]["alerts"] + "-shadow")
        assert any(a["annotations"]["summary"].startswith("v2") for a in shadow)

        replace_rule(s, "value > 96", "v3 {{ value }}")  # fires one event later: other episodes
        s.phases.clear()
        wait_for(lambda: s.watch_phase().get("phase") == "WaitingForPromote", "the diff to hold the rollout",
                 120, every=0.2)
    held = s.canary()
    diff = held["shadowDiff"]
    assert diff["onlyStable"] > 0 and diff["onlyCandidate"] > 0, diff
    assert diff["byRule"][RULE]["onlyCandidate"] == diff["onlyCandidate"]
    assert diff["examples"] and "transition(s) differ" in held["message"]
    assert s.config()["rules"][0]["spec"]["threshold"]["condition"] == "value > 80"  # stable untouched
