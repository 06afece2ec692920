"""An AlertPipeline's status from what one reconcile found: which rules go live, replicas wanted and
available, the conditions and the status fields, and when to look again. Pure: the reconciler
gathers the findings (apiserver, Kafka, Redis), these functions say what the status becomes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alertpipe.operator.decisions.compile import config_map_name
from alertpipe.operator.decisions.conditions import Observed, Want, merge_conditions, pipeline_conditions
from alertpipe.operator.decisions.killswitches import active_switches, describe_active, next_expiry
from alertpipe.operator.decisions.replicas import reconciled_replicas
from alertpipe.operator.decisions.scaling import SCALING_CONDITIONS
from alertpipe.operator.decisions.selector import matches
from alertpipe.operator.decisions.topics import TopicWant
from alertpipe.operator.decisions.validation import RuleVerdict
from alertpipe.operator.decisions.workloads import deployment_name
from alertpipe.operator.models import ROLES, AlertPipelineSpec, LabelSelector
from alertpipe.workers.config.models import RuleEntry

__all__ = [
    "Findings",
    "autoscaled_replicas",
    "available_replicas",
    "desired_replicas",
    "next_status",
    "pipeline_status",
    "retry_after",
    "select_rules",
]

JSON = dict[str, Any]


def select_rules(
    rules: Iterable[Mapping[str, Any]],
    selector: LabelSelector,
    verdict: Callable[[Mapping[str, Any]], RuleVerdict],
) -> tuple[list[RuleEntry], list[str]]:
    """The rules the pipeline selects: the valid ones as config entries, the others as "name: why"."""
    entries: list[RuleEntry] = []
    invalid: list[str] = []
    for rule in rules:
        if not matches(selector, rule["metadata"].get("labels") or {}):
            continue
        v = verdict(rule)
        if v.valid and v.spec is not None:
            entries.append(RuleEntry(name=rule["metadata"]["name"], spec=v.spec))
        else:
            invalid.append(f"{rule['metadata']['name']}: {v.message}")
    return entries, invalid


def autoscaled_replicas(
    namespace: str,
    name: str,
    spec: AlertPipelineSpec,
    watched: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime,
) -> dict[str, int]:
    """Replicas of the autoscaled roles: what the scaler set on the live (watched) Deployment."""
    out: dict[str, int] = {}
    for role in ROLES:
        live = watched.get((namespace, deployment_name(name, role)))
        have = (live or {}).get("spec", {}).get("replicas")
        n = reconciled_replicas(spec, role, None if have is None else int(have), now)
        if n is not None:
            out[role] = n
    return out


def desired_replicas(spec: AlertPipelineSpec, scaled: Mapping[str, int]) -> dict[str, int]:
    """Replicas per enabled role: the autoscaler's where it scales the role, else the spec's."""
    return {r: scaled.get(r, getattr(spec, r).replicas) for r in ROLES if getattr(spec, r).enabled}


def _rv(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("resourceVersion") or 0)


def available_replicas(
    namespace: str,
    name: str,
    roles: Iterable[str],
    watched: Mapping[tuple[str, str], Mapping[str, Any]],
    written: Mapping[str, Mapping[str, Any]],
) -> dict[str, int]:
    """Available replicas per role from the newer of the watched Deployment and the one just written."""
    out: dict[str, int] = {}
    for r in roles:
        dname = deployment_name(name, r)
        fresh = written.get(dname, {})
        dep = watched.get((namespace, dname)) or fresh
        newest = dep if _rv(dep) >= _rv(fresh) else fresh
        out[r] = int((newest.get("status") or {}).get("availableReplicas") or 0)
    return out


@dataclass(frozen=True)
class Findings:
    """What one reconcile of a valid pipeline found."""

    revision: str  # of the config compiled
    entries: list[RuleEntry]  # rules live
    invalid: list[str]  # rules left out, "name: why"
    topics: list[TopicWant]
    desired_replicas: Mapping[str, int]
    available_replicas: Mapping[str, int]
    topics_error: str = ""
    topics_reason: str = ""
    refused_shrinks: tuple[tuple[str, int, int], ...] = ()
    redis_error: str = ""
    redis_reason: str = ""
    canary: Want | None = None
    slo: Want | None = None  # SLOMet from status.slo (operator/slo.py); None: no spec.slo
    extra: JSON = field(default_factory=dict)  # more status fields (the KEDA engine's ``scaling``)


def pipeline_status(
    name: str, generation: int | None, spec: AlertPipelineSpec, f: Findings, now: datetime
) -> tuple[Observed, JSON]:
    """The observation the conditions are computed from, and the other status fields."""
    active = active_switches(spec.kill_switches, now)
    lines = tuple(describe_active(active))
    expired = tuple(x for x in describe_active(spec.kill_switches) if x not in lines)
    observed = Observed(
        topics_error=f.topics_error,
        topics_reason=f.topics_reason or "KafkaUnavailable",
        redis_error=f.redis_error,
        redis_reason=f.redis_reason or "RedisUnreachable",
        refused_shrinks=f.refused_shrinks,
        rules_valid=len(f.entries),
        rules_invalid=tuple(f.invalid),
        desired_replicas=dict(f.desired_replicas),
        available_replicas=dict(f.available_replicas),
        kill_switches=lines,
        expired_switches=expired,
        canary=f.canary,
        slo=f.slo,
    )
    fields = {
        "observedGeneration": generation,
        "revision": f.revision,
        "configMap": config_map_name(name),
        "rules": {
            "valid": len(f.entries),
            "invalid": len(f.invalid),
            "disabled": sum(1 for e in f.entries if any(d.name == e.name for d in active.disabled_rules)),
        },
        "invalidRules": sorted(i.split(":", 1)[0] for i in f.invalid),
        "topics": {w.purpose: w.name for w in f.topics},
        "replicas": {
            r: {"desired": n, "available": f.available_replicas.get(r, 0)}
            for r, n in f.desired_replicas.items()
        },
        **f.extra,
    }
    return observed, fields


def next_status(
    status: Mapping[str, Any],
    observed: Observed,
    now: datetime,
    fields: Mapping[str, Any],
    scaled: list[str] | None = None,
) -> tuple[JSON, list[JSON]]:
    """The status to write (equal to ``status`` when nothing changed) and its conditions."""
    wants: list[Want] = pipeline_conditions(observed)
    conditions = merge_conditions(
        status.get("conditions") or [], wants, now, fields.get("observedGeneration")
    )
    if scaled:
        # the scaler's conditions are its own: kept while it runs, dropped when it stops
        conditions += [c for c in status.get("conditions") or [] if c.get("type") in SCALING_CONDITIONS]
    new_status = {**status, **fields, "conditions": conditions}
    if new_status.get("scaling", 0) is None:
        del new_status["scaling"]
    if fields.get("replicas") is not None:
        new_status["replicas"] = fields["replicas"]
    return new_status, conditions


def retry_after(spec: AlertPipelineSpec, now: datetime, *delays: float | None) -> float | None:
    """Seconds until the pipeline must be reconciled again: the soonest retry, or a kill switch expiring."""
    expiry = next_expiry(spec.kill_switches, now)
    found = [d for d in delays if d is not None]
    if expiry is not None:
        found.append((expiry - now).total_seconds() + 0.05)
    return min(found) if found else None
