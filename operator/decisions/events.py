"""Which Kubernetes Events a reconcile posts, and what they hold: pure functions of what changed.

One Event per decision a user should see (a condition flipping, a kill switch on or off, topics
created or adopted, a spec or rule rejected), never one per reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alertpipe.operator.decisions.connectivity import CONNECTIVITY_REASONS

__all__ = [
    "EventWant",
    "event_object",
    "invalid_spec_event",
    "rule_rejected_event",
    "topic_events",
    "transition_events",
]

JSON = dict[str, Any]


@dataclass(frozen=True)
class EventWant:
    type: str  # Normal or Warning
    reason: str
    message: str


def event_object(obj: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime) -> JSON:
    """The v1 Event about ``obj`` (an AlertPipeline unless its kind says otherwise)."""
    meta = obj["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "alertpipe.io/v1alpha1"),
            "kind": obj.get("kind", "AlertPipeline"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "alertpipe-operator"},
        "reportingComponent": "alertpipe-operator",
        "firstTimestamp": stamp[:19] + "Z",
        "lastTimestamp": stamp[:19] + "Z",
        "count": 1,
    }


def transition_events(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[EventWant]:
    """The Events for the pipeline's conditions that changed between two statuses."""
    prev = {c.get("type"): c for c in before}
    out = []
    for c in after:
        old = prev.get(c["type"])
        if old is not None and old.get("status") == c["status"] and old.get("reason") == c["reason"]:
            if c["type"] != "KillSwitchActive" or old.get("message") == c["message"]:
                continue
        t, reason = c["type"], c["reason"]
        if t == "KillSwitchActive" and c["status"] == "True":
            out.append(EventWant("Warning", "KillSwitchOn", c["message"]))
        elif t == "KillSwitchActive" and reason == "KillSwitchExpired":
            out.append(EventWant("Normal", "KillSwitchExpired", c["message"]))
        elif t == "KillSwitchActive" and old is not None and old.get("status") == "True":
            out.append(EventWant("Normal", "KillSwitchOff", "every kill switch is off"))
        elif t == "TopicsReady" and reason == "PartitionDecreaseNotSupported":
            out.append(EventWant("Warning", reason, c["message"]))
        elif t in ("TopicsReady", "RedisReady") and reason in CONNECTIVITY_REASONS:
            out.append(EventWant("Warning", reason, c["message"]))
        elif t == "Ready" and c["status"] == "True":
            out.append(EventWant("Normal", "Ready", c["message"]))
    return out


def topic_events(done: Sequence[str], adopted: Sequence[str], known: set[str]) -> list[EventWant]:
    """One Event per reason, naming every topic (a new pipeline posts one, not five).

    ``done`` is what the admin client changed (lines "created …", "grew …", else configured);
    ``adopted`` the topics that existed already; ``known`` the topics the status names already.
    """
    by_reason: dict[str, list[str]] = {}
    for line in done:
        reason = (
            "TopicCreated"
            if line.startswith("created")
            else ("PartitionsGrown" if line.startswith("grew") else "TopicConfigured")
        )
        by_reason.setdefault(reason, []).append(line)
    for topic in adopted:
        if topic not in known and not any(topic in d for d in done):
            by_reason.setdefault("TopicAdopted", []).append(f"adopted existing topic {topic}")
    return [EventWant("Normal", reason, "; ".join(lines)) for reason, lines in by_reason.items()]


def invalid_spec_event(previous: Sequence[Mapping[str, Any]], message: str) -> EventWant | None:
    """An InvalidSpec Event, unless the status says so with the same message already."""
    if any(c.get("reason") == "InvalidSpec" and c.get("message") == message for c in previous):
        return None
    return EventWant("Warning", "InvalidSpec", message)


def rule_rejected_event(status: Mapping[str, Any], rejected: str | None) -> EventWant | None:
    """A RuleRejected Event when a rule is rejected for a reason its status does not show yet."""
    if rejected is None:
        return None
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "Valid"), None)
    if old is not None and old.get("message") == rejected:
        return None
    return EventWant("Warning", "RuleRejected", rejected)
