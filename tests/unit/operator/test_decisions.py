"""Pure decisions: topic plans, selectors, kill-switch expiry, conditions, config compile, workloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alertpipe.operator.decisions.compile import compile_config
from alertpipe.operator.decisions.conditions import Observed, merge_conditions, pipeline_conditions
from alertpipe.operator.decisions.killswitches import active_switches, describe_active, next_expiry
from alertpipe.operator.decisions.selector import matches
from alertpipe.operator.decisions.topics import TopicSeen, desired_topics, plan_topics
from alertpipe.operator.decisions.validation import validate_pipeline_spec, validate_rule, validate_rule_in
from alertpipe.operator.decisions.workloads import (
    DESIRED_HASH,
    Owner,
    desired_config_map,
    desired_objects,
    needs_update,
)
from alertpipe.operator.models import AlertPipelineSpec, LabelSelector
from alertpipe.workers.config.models import ChannelSpec, KillSwitches, PipelineConfig, RuleEntry, RuleSpec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pipeline_spec(**extra: Any) -> AlertPipelineSpec:
    raw: dict[str, Any] = {
        "kafka": {"bootstrapServers": "127.0.0.1:9092", "topics": {"events": {"partitions": 4}}},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "channels": [
            {
                "name": "ops",
                "webhook": {
                    "url": "http://127.0.0.1:1/hook",
                    "signingSecretRef": {"name": "hook", "key": "k"},
                },
            },
            {"name": "pager", "pagerduty": {"routingKeySecretRef": {"name": "pd", "key": "rk"}}},
        ],
    }
    raw.update(extra)
    return AlertPipelineSpec.model_validate(raw)


# --- topics -----------------------------------------------------------------------------------


def test_topic_plan_creates_adopts_grows_and_never_shrinks() -> None:
    want = desired_topics("ns", "p", pipeline_spec().kafka)
    names = {w.purpose: w.name for w in want}
    assert names["events"] == "ns.p.events" and names["deadLetter"] == "ns.p.deadLetter"
    events = next(w for w in want if w.purpose == "events")
    assert events.partitions == 4 and events.retention_ms == 7 * 86_400_000

    seen = {
        "ns.p.events": TopicSeen("ns.p.events", 2, events.retention_ms),  # grow 2 -> 4
        "ns.p.alerts": TopicSeen("ns.p.alerts", 12, 7 * 86_400_000),  # spec asks 6: refused
        "ns.p.late": TopicSeen("ns.p.late", 1, 1000),  # retention differs
    }
    plan = plan_topics(want, seen)
    assert [w.name for w in plan.create] == [
        "ns.p.deadLetter", "ns.p.audit", "ns.p.retry", "ns.p.repartition"]
    assert plan.grow == [("ns.p.events", 2, 4)]
    assert plan.refused_shrinks == [("ns.p.alerts", 12, 6)]
    assert plan.retention == [("ns.p.late", 7 * 86_400_000)]
    assert set(plan.adopt) == {"ns.p.events", "ns.p.alerts", "ns.p.late"}
    assert plan.changes


def test_topic_plan_adds_the_repartition_topic_to_an_existing_pipeline() -> None:
    """A pipeline created before the repartition stage: only that topic is new (6 partitions, 7d)."""
    want = desired_topics("ns", "p", pipeline_spec().kafka)
    seen = {w.name: TopicSeen(w.name, w.partitions, w.retention_ms)
            for w in want if w.purpose != "repartition"}
    plan = plan_topics(want, seen)
    assert [(w.purpose, w.name, w.partitions, w.retention_ms) for w in plan.create] == [
        ("repartition", "ns.p.repartition", 6, 7 * 86_400_000)]
    assert not plan.grow and not plan.retention and plan.changes


def test_topic_plan_is_empty_when_everything_matches() -> None:
    want = desired_topics("ns", "p", pipeline_spec().kafka)
    seen = {w.name: TopicSeen(w.name, w.partitions, w.retention_ms) for w in want}
    plan = plan_topics(want, seen)
    assert not plan.changes and not plan.refused_shrinks


# --- selector ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["1", "2"]}]},
            {"tier": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["1"]}]}, {"tier": "1"}, False),
        ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"x": ""}, True),
        ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"x": ""}, False),
    ],
)
def test_selector(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert matches(LabelSelector.model_validate(selector), labels) is expected


# --- kill switches ----------------------------------------------------------------------------


def test_kill_switches_expire_and_report_next_expiry() -> None:
    ks = KillSwitches.model_validate(
        {
            "stopDelivery": {"reason": "receiver down", "until": (NOW + timedelta(minutes=5)).isoformat()},
            "stopEvaluation": {"reason": "old", "until": (NOW - timedelta(minutes=1)).isoformat()},
            "mutedChannels": [{"name": "ops", "reason": "noisy"}],
            "disabledRules": [
                {"name": "r1", "reason": "flapping", "until": "2026-01-01T12:01:00"}
            ],  # naive = UTC
        }
    )
    active = active_switches(ks, NOW)
    assert active.stop_evaluation is None and active.stop_delivery is not None
    assert describe_active(active) == [
        "stopDelivery: receiver down",
        "disabledRules[r1]: flapping",
        "mutedChannels[ops]: noisy",
    ]
    assert next_expiry(ks, NOW) == NOW + timedelta(minutes=1)
    later = NOW + timedelta(minutes=6)
    assert describe_active(active_switches(ks, later)) == ["mutedChannels[ops]: noisy"]
    assert next_expiry(ks, later) is None


# --- conditions -------------------------------------------------------------------------------


def test_conditions_ready_and_transition_time_kept() -> None:
    o = Observed(rules_valid=2, desired_replicas={"evaluator": 1}, available_replicas={"evaluator": 1})
    first = merge_conditions([], pipeline_conditions(o), NOW, 3)
    by = {c["type"]: c for c in first}
    assert by["Ready"]["status"] == "True" and by["Ready"]["observedGeneration"] == 3
    assert by["KillSwitchActive"]["status"] == "False"
    again = merge_conditions(first, pipeline_conditions(o), NOW + timedelta(hours=1), 3)
    assert again == first  # nothing changed: identical, so nothing is written


def test_conditions_explain_what_blocks() -> None:
    o = Observed(
        refused_shrinks=(("t", 12, 6),),
        rules_valid=1,
        rules_invalid=("bad: spec.threshold.condition: unexpected end",),
        desired_replicas={"evaluator": 2},
        available_replicas={"evaluator": 1},
        kill_switches=("stopDelivery: receiver down",),
    )
    by = {w.type: w for w in pipeline_conditions(o)}
    assert (
        by["TopicsReady"].reason == "PartitionDecreaseNotSupported"
        and "t has 12, spec asks 6" in by["TopicsReady"].message
    )
    assert by["Ready"].status == "False" and by["Ready"].reason == "PartitionDecreaseNotSupported"
    assert by["RulesReady"].status == "False" and "bad: spec.threshold.condition" in by["RulesReady"].message
    assert by["WorkersAvailable"].message == "available: evaluator 1/2"
    assert by["KillSwitchActive"].status == "True" and "receiver down" in by["KillSwitchActive"].message
    invalid = {w.type: w for w in pipeline_conditions(Observed(spec_errors="spec.redis: bad"))}
    assert invalid["Ready"].reason == "InvalidSpec" and invalid["Ready"].message == "spec.redis: bad"


# --- compile ----------------------------------------------------------------------------------


def _rule(cond: str) -> RuleSpec:
    return RuleSpec.model_validate({"threshold": {"condition": cond}, "channels": ["ops"]})


def test_compile_is_deterministic_and_revision_tracks_content() -> None:
    spec = pipeline_spec()
    a = compile_config(
        "ns",
        "p",
        spec,
        [RuleEntry(name="b", spec=_rule("value > 1")), RuleEntry(name="a", spec=_rule("value > 2"))],
        NOW,
    )
    b = compile_config(
        "ns",
        "p",
        spec,
        [RuleEntry(name="a", spec=_rule("value > 2")), RuleEntry(name="b", spec=_rule("value > 1"))],
        NOW,
    )
    assert a.revision == b.revision and [r.name for r in a.rules] == ["a", "b"]
    assert a.kafka.topics.events == "ns.p.events" and a.redis.key_prefix == "ns:p:"
    assert a.kafka.topics.retry == "ns.p.retry"  # the deliverer parks failing deliveries there
    assert a.kafka.topics.repartition == "ns.p.repartition"  # the evaluator's group stage reads it
    c = compile_config("ns", "p", spec, [RuleEntry(name="a", spec=_rule("value > 3"))], NOW)
    assert c.revision != a.revision
    assert PipelineConfig.from_json(a.to_json()) == a  # what the workers read back


def test_expired_kill_switch_leaves_the_config() -> None:
    until = (NOW + timedelta(seconds=30)).isoformat()
    spec = pipeline_spec(killSwitches={"stopEvaluation": {"reason": "incident 42", "until": until}})
    on = compile_config("ns", "p", spec, [], NOW)
    off = compile_config("ns", "p", spec, [], NOW + timedelta(seconds=31))
    assert on.kill_switches.stop_evaluation is not None and off.kill_switches.stop_evaluation is None
    assert on.revision != off.revision


# --- workloads --------------------------------------------------------------------------------


def test_desired_objects_owned_labelled_and_least_privilege() -> None:
    owner = Owner("ns", "p", "uid-1")
    spec = pipeline_spec(
        kafka={"bootstrapServers": "k:9092", "credentialsSecretRef": {"name": "kafka-creds", "key": "x"}},
        evaluator={"replicas": 3, "resources": {"requests": {"cpu": "100m"}}},
        deliverer={"image": "custom:1"},
    )
    objs = desired_objects(owner, spec, "img:1", {})
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert kinds == [
        ("ServiceAccount", "p-worker"),
        ("Role", "p-worker"),
        ("RoleBinding", "p-worker"),
        ("Deployment", "p-ingestor"),
        ("Deployment", "p-evaluator"),
        ("Deployment", "p-deliverer"),
        ("Service", "p-ingestor"),
    ]
    for o in objs:
        assert o["metadata"]["ownerReferences"][0] == {
            "apiVersion": "alertpipe.io/v1alpha1",
            "kind": "AlertPipeline",
            "name": "p",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == "p"
        assert DESIRED_HASH in o["metadata"]["annotations"]
    role = objs[1]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["p-config", "p-config-canary"],  # stable and canary candidate
            "verbs": ["get", "list", "watch"],
        }
    ]
    deps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    ev = deps["p-evaluator"]["spec"]
    assert ev["replicas"] == 3
    c = ev["template"]["spec"]["containers"][0]
    assert c["command"] == [
        "alertpipe",
        "evaluator",
        "--config",
        "configmap:ns/p-config",
        "--secrets-dir",
        "/var/run/secrets/alertpipe",
        "--linger-ms",
        "1",
        "--checkpoint-interval",
        "1",
        "--metrics-port",
        "9102",
    ]
    assert c["image"] == "img:1" and c["resources"] == {"requests": {"cpu": "100m"}}
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp", "/var/run/secrets/alertpipe/kafka-creds"]
    dl = deps["p-deliverer"]["spec"]["template"]["spec"]["containers"][0]
    assert dl["image"] == "custom:1"
    assert sorted(m["mountPath"].rsplit("/", 1)[1] for m in dl["volumeMounts"]) == [
        "hook",
        "kafka-creds",
        "pd",
        "tmp",
    ]
    ing = deps["p-ingestor"]["spec"]["template"]["spec"]["containers"][0]
    assert "pd" not in str(ing["volumeMounts"])  # channel secrets only reach the deliverer


def test_disabled_role_has_no_deployment_and_needs_update_compares_hash() -> None:
    owner = Owner("ns", "p", "u")
    spec = pipeline_spec(ingestor={"enabled": False})
    objs = desired_objects(owner, spec, "img", {})
    assert ("Service" not in [o["kind"] for o in objs]) and "p-ingestor" not in [
        o["metadata"]["name"] for o in objs
    ]
    dep = next(o for o in objs if o["kind"] == "Deployment")
    live = {
        **dep,
        "status": {"availableReplicas": 1},
        "metadata": {**dep["metadata"], "resourceVersion": "9"},
    }
    live["spec"] = {**dep["spec"], "revisionHistoryLimit": 10}  # apiserver defaults do not count
    assert not needs_update(dep, live)
    assert needs_update(dep, {**live, "spec": {**live["spec"], "replicas": 5}})  # drift
    other = desired_objects(
        owner, pipeline_spec(ingestor={"enabled": False}, evaluator={"replicas": 2}), "img", {}
    )
    assert needs_update(next(o for o in other if o["metadata"]["name"] == dep["metadata"]["name"]), live)


def test_config_map_carries_the_contract() -> None:
    cfg = compile_config("ns", "p", pipeline_spec(), [], NOW)
    cm = desired_config_map(Owner("ns", "p", "u"), cfg)
    assert cm["metadata"]["name"] == "p-config"
    assert PipelineConfig.from_json(cm["data"]["config.json"]).revision == cfg.revision


# --- validation -------------------------------------------------------------------------------


BROKEN_RULES = [
    ({"threshold": {"condition": "value >"}}, "spec.threshold.condition", "column"),
    ({"threshold": {"condition": "value > 1"}, "absence": {"for": "1m"}}, "spec", "exactly one of threshold"),
    (
        {"aggregate": {"fn": "count", "window": "5 minutes", "condition": "value > 1"}},
        "spec.aggregate.window",
        "not a duration",
    ),
    ({"threshold": {"condition": "value > 1"}, "severity": "urgent"}, "spec.severity", "critical"),
    ({"threshold": {"condition": "value > 1"}, "thresold": {}}, "spec.thresold", "unknown field"),
    ({"threshold": {"condition": "value > 1"}, "by": "deviceId"}, "spec.by", "list"),
    ({"threshold": {"condition": "value > 1"}, "channels": ["nope"]}, "spec.channels[0]", "nope"),
]


@pytest.mark.parametrize(("spec", "path", "words"), BROKEN_RULES)
def test_broken_rules_name_path_and_reason(spec: dict[str, Any], path: str, words: str) -> None:
    verdict = validate_rule("r", spec, list(pipeline_spec().channels))
    assert not verdict.valid
    assert any(p == path and words in r for p, r in verdict.errors), verdict.errors


def test_admission_checks_channels_per_selecting_pipeline_as_status_does() -> None:
    """Two pipelines select the rule; only one defines its channel. Against the union of their
    channels it passed admission and then failed in the other pipeline's status (issue 18)."""
    a = [ChannelSpec.model_validate({"name": "pager", "webhook": {"url": "http://x"}})]
    b = [ChannelSpec.model_validate({"name": "slack", "webhook": {"url": "http://y"}})]
    spec = {"threshold": {"condition": "value > 1"}, "channels": ["pager"]}
    assert validate_rule("r", spec, a + b).valid  # the union: what admission used to check
    assert not validate_rule("r", spec, b).valid  # what pipeline "b"'s status says
    verdict = validate_rule_in("r", spec, [("a", a), ("b", b)])
    assert not verdict.valid
    assert [(p, r.endswith("(AlertPipeline b)")) for p, r in verdict.errors] == [("spec.channels[0]", True)]
    assert validate_rule_in("r", spec, [("a", a)]).valid
    assert validate_rule_in("r", spec, []).valid  # no pipeline selects it yet: nothing to check against
    assert not validate_rule_in("r", {"threshold": {"condition": "nope("}}, [("a", a)]).valid


BROKEN_PIPELINES = [
    ({"evaluator": {"replicas": -1}}, "spec.evaluator.replicas", "greater than or equal to 0"),
    ({"redis": {}}, "spec.redis", "exactly one of url, urlSecretRef"),
    (
        {"channels": [{"name": "a", "webhook": {"url": "http://x"}, "fallback": "zzz"}]},
        "spec",
        "unknown channel 'zzz'",
    ),
    ({"channels": [{"name": "a"}]}, "spec.channels[0]", "exactly one of webhook"),
    ({"allowedLateness": "soon"}, "spec.allowedLateness", "not a duration"),
    ({"deletionPolicy": "Maybe"}, "spec.deletionPolicy", "Retain"),
    (
        {"killSwitches": {"mutedChannels": [{"name": "ghost", "reason": "x"}]}},
        "spec",
        "unknown channel 'ghost'",
    ),
]


@pytest.mark.parametrize(("extra", "path", "words"), BROKEN_PIPELINES)
def test_broken_pipelines_name_path_and_reason(extra: dict[str, Any], path: str, words: str) -> None:
    raw = pipeline_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw.update(extra)
    spec, errors = validate_pipeline_spec(raw)
    assert spec is None
    assert any(p == path and words in r for p, r in errors), errors
