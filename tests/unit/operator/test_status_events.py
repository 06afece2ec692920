"""The pure decisions a reconcile's status and Events come from (decisions/pipeline_status.py,
rule_status.py, events.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alertpipe.operator.decisions.conditions import Observed
from alertpipe.operator.decisions.events import (
    EventWant,
    event_object,
    invalid_spec_event,
    rule_rejected_event,
    topic_events,
    transition_events,
)
from alertpipe.operator.decisions.pipeline_status import (
    Findings,
    available_replicas,
    desired_replicas,
    next_status,
    pipeline_status,
    retry_after,
    select_rules,
)
from alertpipe.operator.decisions.rule_status import rule_status
from alertpipe.operator.decisions.scaling import SCALING_CONDITIONS
from alertpipe.operator.decisions.topics import desired_topics
from alertpipe.operator.decisions.validation import validate_rule
from alertpipe.operator.models import AlertPipelineSpec, LabelSelector
from alertpipe.workers.config.models import ChannelSpec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def spec(**extra: Any) -> AlertPipelineSpec:
    return AlertPipelineSpec.model_validate(
        {
            "kafka": {"bootstrapServers": "k:9092"},
            "redis": {"url": "redis://r:6379/0"},
            "channels": [{"name": "ops", "webhook": {"url": "https://ops.example/hook"}}],
            **extra,
        }
    )


def rule(
    name: str, labels: dict[str, str] | None = None, channels: tuple[str, ...] = ("ops",)
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": name, "generation": 3, "labels": labels or {}},
        "spec": {
            "select": {"types": ["cpu"]},
            "threshold": {"condition": "value > 1"},
            "severity": "info",
            "channels": list(channels),
        },
    }


def verdict(r: Any, channels: list[ChannelSpec] | None) -> Any:
    return validate_rule(r["metadata"]["name"], r.get("spec"), channels)


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


# --- events -------------------------------------------------------------------------------------


def test_transition_events_only_for_what_changed() -> None:
    before = [cond("Ready", "False", "WaitingForReplicas"), cond("KillSwitchActive", "False", "NoKillSwitch")]
    after = [
        cond("Ready", "True", "Ready", "pipeline is live"),
        cond("KillSwitchActive", "True", "KillSwitchOn", "stopDelivery: INC-1"),
        cond("TopicsReady", "False", "KafkaUnreachable", "cannot reach Kafka"),
    ]
    assert transition_events(before, after) == [
        EventWant("Normal", "Ready", "pipeline is live"),
        EventWant("Warning", "KillSwitchOn", "stopDelivery: INC-1"),
        EventWant("Warning", "KafkaUnreachable", "cannot reach Kafka"),
    ]
    assert transition_events(after, after) == []
    # a kill switch whose reason changes is news; switching all off is too
    changed = [cond("KillSwitchActive", "True", "KillSwitchOn", "stopDelivery: INC-2")]
    assert [e.message for e in transition_events(after, changed)] == ["stopDelivery: INC-2"]
    off = [cond("KillSwitchActive", "False", "NoKillSwitch")]
    assert transition_events(after, off) == [EventWant("Normal", "KillSwitchOff", "every kill switch is off")]


def test_topic_events_one_per_reason_naming_every_topic() -> None:
    done = [
        "created topic n.p.events",
        "created topic n.p.alerts",
        "grew topic n.p.late from 2 to 4 partitions",
    ]
    events = topic_events(done, adopted=["n.p.audit", "n.p.retry", "n.p.events"], known={"n.p.retry"})
    assert events == [
        EventWant("Normal", "TopicCreated", "created topic n.p.events; created topic n.p.alerts"),
        EventWant("Normal", "PartitionsGrown", "grew topic n.p.late from 2 to 4 partitions"),
        EventWant("Normal", "TopicAdopted", "adopted existing topic n.p.audit"),
    ]
    assert topic_events([], [], set()) == []


def test_invalid_spec_and_rejected_rule_events_are_not_repeated() -> None:
    assert invalid_spec_event([], "spec.kafka: missing") == EventWant(
        "Warning", "InvalidSpec", "spec.kafka: missing"
    )
    assert (
        invalid_spec_event(
            [cond("Ready", "False", "InvalidSpec", "spec.kafka: missing")], "spec.kafka: missing"
        )
        is None
    )
    status = {"conditions": [cond("Valid", "False", "InvalidRule", "spec.channels[0]: unknown")]}
    assert rule_rejected_event(status, "spec.channels[0]: unknown") is None
    assert rule_rejected_event(status, "spec.for: bad") == EventWant(
        "Warning", "RuleRejected", "spec.for: bad"
    )
    assert rule_rejected_event({}, None) is None


def test_event_object_is_about_its_object_and_bounded() -> None:
    obj = {
        "kind": "AlertRule",
        "apiVersion": "alertpipe.io/v1alpha1",
        "metadata": {"name": "r", "namespace": "n", "uid": "u"},
    }
    ev = event_object(obj, "Warning", "RuleRejected", "x" * 5000, NOW)
    assert ev["involvedObject"] == {
        "apiVersion": "alertpipe.io/v1alpha1",
        "kind": "AlertRule",
        "name": "r",
        "namespace": "n",
        "uid": "u",
    }
    assert len(ev["message"]) == 1024 and ev["firstTimestamp"] == "2026-01-01T12:00:00Z"
    assert ev["metadata"] == {"generateName": "r.", "namespace": "n"}


# --- pipeline status ----------------------------------------------------------------------------


def test_select_rules_takes_the_selected_valid_ones_and_names_the_rest() -> None:
    rules = [rule("a", {"team": "x"}), rule("b", {"team": "y"}), rule("c", {"team": "x"}, channels=("nope",))]
    s = spec(ruleSelector={"matchLabels": {"team": "x"}})
    entries, invalid = select_rules(rules, s.rule_selector, lambda r: verdict(r, list(s.channels)))
    assert [e.name for e in entries] == ["a"]
    assert len(invalid) == 1 and invalid[0].startswith("c: ") and "nope" in invalid[0]
    everything = select_rules(rules, LabelSelector(), lambda r: verdict(r, None))
    assert [e.name for e in everything[0]] == ["a", "b", "c"]


def test_replicas_desired_and_available_from_the_newest_copy() -> None:
    s = spec(ingestor={"enabled": False}, evaluator={"replicas": 3})
    wanted = desired_replicas(s, {"deliverer": 5})
    assert wanted == {"evaluator": 3, "deliverer": 5}
    watched = {
        ("n", "p-evaluator"): {"metadata": {"resourceVersion": "9"}, "status": {"availableReplicas": 2}}
    }
    written = {
        "p-evaluator": {"metadata": {"resourceVersion": "7"}, "status": {"availableReplicas": 1}},
        "p-deliverer": {"metadata": {"resourceVersion": "4"}, "status": {"availableReplicas": 5}},
    }
    assert available_replicas("n", "p", wanted, watched, written) == {"evaluator": 2, "deliverer": 5}


def test_pipeline_status_and_next_status() -> None:
    until = (NOW + timedelta(minutes=5)).isoformat()
    gone = (NOW - timedelta(minutes=5)).isoformat()
    s = spec(
        killSwitches={
            "stopDelivery": {"reason": "INC-9", "until": until},
            "stopEvaluation": {"reason": "old", "until": gone},
        }
    )
    entries, invalid = select_rules(
        [rule("a"), rule("b", channels=("x",))], s.rule_selector, lambda r: verdict(r, list(s.channels))
    )
    f = Findings(
        revision="r1",
        entries=entries,
        invalid=invalid,
        topics=desired_topics("n", "p", s.kafka),
        desired_replicas={"evaluator": 1},
        available_replicas={"evaluator": 0},
        refused_shrinks=(("n.p.events", 6, 3),),
        extra={"scaling": None},
    )
    observed, fields = pipeline_status("p", 4, s, f, NOW)
    assert observed.kill_switches == ("stopDelivery: INC-9",) and observed.expired_switches == (
        "stopEvaluation: old",
    )
    assert observed.topics_reason == "KafkaUnavailable" and observed.rules_invalid == tuple(invalid)
    assert fields["configMap"] == "p-config" and fields["invalidRules"] == ["b"]
    assert fields["replicas"] == {"evaluator": {"desired": 1, "available": 0}}
    assert fields["topics"]["events"] == "n.p.events"

    scaler_cond = {**cond(sorted(SCALING_CONDITIONS)[0], "True", "Scaled"), "lastTransitionTime": "t"}
    old = {"conditions": [scaler_cond], "scaling": {"evaluator": {}}}
    new, conditions = next_status(old, observed, NOW, fields, scaled=["evaluator"])
    assert "scaling" not in new  # None: the KEDA engine scales nothing now
    assert scaler_cond in conditions  # the scaler's own conditions are kept while it runs
    by_type = {c["type"]: c for c in conditions}
    assert by_type["TopicsReady"]["reason"] == "PartitionDecreaseNotSupported"
    assert by_type["KillSwitchActive"]["status"] == "True"
    assert all(c.get("observedGeneration") == 4 for c in conditions if c is not scaler_cond)
    again, _ = next_status(new, observed, NOW, fields, scaled=["evaluator"])
    assert again == new  # nothing changed: nothing to write
    assert scaler_cond not in next_status(old, observed, NOW, fields, scaled=[])[1]

    assert retry_after(s, NOW, None, None) == pytest.approx(300.05)  # the kill switch expires
    assert retry_after(s, NOW, 2.0, 7.0) == 2.0
    assert retry_after(spec(), NOW, None, None) is None


def test_invalid_spec_observation_makes_ready_false() -> None:
    new, conditions = next_status(
        {}, Observed(spec_errors="spec.kafka: required"), NOW, {"observedGeneration": 1}
    )
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "InvalidSpec",
        "spec.kafka: required",
    )
    assert new["observedGeneration"] == 1


# --- rule status --------------------------------------------------------------------------------


def test_rule_status_checks_each_selecting_pipeline_and_names_it() -> None:
    one = spec()
    two = spec(channels=[{"name": "pager", "webhook": {"url": "https://p.example/"}}])
    r = rule("a")
    status, rejected = rule_status(
        r, [("p1", one), ("p2", two)], verdict, {"p1": ("rev1", frozenset({"a"}))}, NOW
    )
    assert rejected is not None and "(pipeline p2)" in rejected and "p1" not in rejected
    assert status["pipelines"] == ["p1", "p2"] and status["live"] == [{"pipeline": "p1", "revision": "rev1"}]
    assert status["observedGeneration"] == 3
    ok, none = rule_status(r, [("p1", one)], verdict, {}, NOW)
    assert none is None and ok["conditions"][0]["reason"] == "Compiled" and ok["live"] == []
    alone, _ = rule_status(r, [], verdict, {}, NOW)
    assert alone["conditions"][0]["reason"] == "CompiledNotSelected" and alone["pipelines"] == []
