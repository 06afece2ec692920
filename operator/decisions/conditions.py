"""Status conditions: computing them, and keeping lastTransitionTime when a status does not change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "CondStatus",
    "Observed",
    "Want",
    "merge_conditions",
    "pipeline_conditions",
    "rfc3339",
]

CondStatus = Literal["True", "False", "Unknown"]
JSON = dict[str, Any]


@dataclass(frozen=True)
class Want:
    type: str
    status: CondStatus
    reason: str
    message: str = ""


def rfc3339(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], wanted: Sequence[Want], now: datetime, generation: int | None
) -> list[JSON]:
    """Conditions as the status should hold them; lastTransitionTime moves only when status flips."""
    prev = {str(c.get("type")): c for c in previous}
    out = []
    for w in wanted:
        old = prev.get(w.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == w.status else None
        cond: JSON = {
            "type": w.type,
            "status": w.status,
            "reason": w.reason,
            "message": w.message,
            "lastTransitionTime": since or rfc3339(now),
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


@dataclass(frozen=True)
class Observed:
    """What one reconcile found, condensed for the conditions."""

    spec_errors: str = ""  # non-empty: the spec itself is impossible
    topics_error: str = ""  # Kafka unreachable or a call failed
    topics_reason: str = "KafkaUnavailable"  # why (decisions.connectivity): KafkaUnreachable, AuthFailed, ...
    redis_error: str = ""  # Redis did not answer PING
    redis_reason: str = "RedisUnreachable"
    refused_shrinks: tuple[tuple[str, int, int], ...] = ()
    rules_valid: int = 0
    rules_invalid: tuple[str, ...] = ()  # "name: message"
    desired_replicas: Mapping[str, int] | None = None
    available_replicas: Mapping[str, int] | None = None
    kill_switches: tuple[str, ...] = ()  # active switch descriptions
    expired_switches: tuple[str, ...] = ()
    canary: Want | None = None  # decisions/canary.py canary_condition; None: no rollout ran
    slo: Want | None = None  # decisions/slo.py slo_condition; None: no spec.slo measured


def _topics(o: Observed) -> Want:
    if o.topics_error:
        return Want("TopicsReady", "False", o.topics_reason, o.topics_error)
    if o.refused_shrinks:
        parts = ", ".join(f"{n} has {have}, spec asks {want}" for n, have, want in o.refused_shrinks)
        return Want(
            "TopicsReady",
            "False",
            "PartitionDecreaseNotSupported",
            f"Kafka cannot remove partitions ({parts}); set partitions back to at least the current count",
        )
    return Want("TopicsReady", "True", "TopicsReconciled", "every topic exists with the asked partitions")


def _redis(o: Observed) -> Want:
    if o.redis_error:
        return Want("RedisReady", "False", o.redis_reason, o.redis_error)
    return Want("RedisReady", "True", "RedisReachable", "Redis answers PING")


def _rules(o: Observed) -> Want:
    if o.rules_invalid:
        return Want(
            "RulesReady",
            "False",
            "InvalidRules",
            f"{len(o.rules_invalid)} rule(s) left out, {o.rules_valid} live: " + "; ".join(o.rules_invalid),
        )
    return Want("RulesReady", "True", "RulesCompiled", f"{o.rules_valid} rule(s) live")


def _workers(o: Observed) -> Want:
    desired = dict(o.desired_replicas or {})
    available = dict(o.available_replicas or {})
    short = [f"{r} {available.get(r, 0)}/{n}" for r, n in sorted(desired.items()) if available.get(r, 0) < n]
    if short:
        return Want("WorkersAvailable", "False", "WaitingForReplicas", "available: " + ", ".join(short))
    return Want("WorkersAvailable", "True", "AllReplicasAvailable", "every enabled role has its replicas")


def _kill(o: Observed) -> Want:
    if o.kill_switches:
        return Want("KillSwitchActive", "True", "KillSwitchOn", "; ".join(o.kill_switches))
    if o.expired_switches:
        return Want(
            "KillSwitchActive", "False", "KillSwitchExpired", "expired: " + "; ".join(o.expired_switches)
        )
    return Want("KillSwitchActive", "False", "NoKillSwitch", "")


def pipeline_conditions(o: Observed) -> list[Want]:
    """Ready, TopicsReady, RedisReady, RulesReady, WorkersAvailable, KillSwitchActive for one observation.

    Ready needs topics and workers, not RedisReady: the workers' readiness probes PING Redis, so in a
    cluster a Redis they cannot reach makes WorkersAvailable (and Ready) False by itself, while the
    operator's own PING may be blocked (network policy) where the workers' is not. Ready needs topics
    and workers; invalid rules do not block it (one bad rule never stops the
    others), they show in RulesReady.
    """
    if o.spec_errors:
        return [
            Want("Ready", "False", "InvalidSpec", o.spec_errors),
            Want("TopicsReady", "Unknown", "InvalidSpec", "not reconciled: the spec is invalid"),
            Want("RedisReady", "Unknown", "InvalidSpec", "not reconciled: the spec is invalid"),
            Want("RulesReady", "Unknown", "InvalidSpec", "not reconciled: the spec is invalid"),
            Want("WorkersAvailable", "Unknown", "InvalidSpec", "not reconciled: the spec is invalid"),
            _kill(o),
        ]
    topics, redis, rules, workers, kill = _topics(o), _redis(o), _rules(o), _workers(o), _kill(o)
    blocking = [c for c in (topics, workers) if c.status != "True"]
    if blocking:
        ready = Want("Ready", "False", blocking[0].reason, blocking[0].message)
    else:
        ready = Want("Ready", "True", "PipelineReady", "topics, config and workers are in place")
    extra = [w for w in (o.canary, o.slo) if w is not None]
    return [ready, topics, redis, rules, workers, kill, *extra]
