"""Who owns a role's replicas: the spec, the operator's scaler, or KEDA, and what the reconcile writes.

The reconcile must never undo a scaler: for an autoscaled role it keeps the live Deployment's
replicas (clamped into minReplicas..maxReplicas, so a spec change of the bounds acts at once), and
a kill switch that stops the role's work pins them at 0.
"""

from __future__ import annotations

from datetime import datetime

from alertpipe.operator.decisions.killswitches import active_switches
from alertpipe.operator.models import AlertPipelineSpec, AutoscalingSpec

__all__ = ["SCALED_ROLES", "autoscaled", "operator_scaled", "pinned_by", "reconciled_replicas"]

SCALED_ROLES: tuple[str, ...] = ("evaluator", "deliverer")


def autoscaled(spec: AlertPipelineSpec, role: str) -> AutoscalingSpec | None:
    """The role's autoscaling spec when it is on (and the role enabled), else None."""
    if role not in SCALED_ROLES:
        return None
    workload = getattr(spec, role)
    auto: AutoscalingSpec = workload.autoscaling
    return auto if workload.enabled and auto.enabled else None


def operator_scaled(spec: AlertPipelineSpec) -> list[str]:
    """Roles whose replicas the operator's own scaler decides (engine: operator)."""
    return [r for r in SCALED_ROLES if (a := autoscaled(spec, r)) is not None and a.engine == "operator"]


def pinned_by(spec: AlertPipelineSpec, role: str, now: datetime) -> str | None:
    """The kill switch holding an autoscaled role at 0 replicas (stopEvaluation for the evaluator)."""
    active = active_switches(spec.kill_switches, now)
    if role == "evaluator" and active.stop_evaluation is not None:
        return f"kill switch stopEvaluation ({active.stop_evaluation.reason})"
    return None


def reconciled_replicas(spec: AlertPipelineSpec, role: str, live: int | None, now: datetime) -> int | None:
    """Replicas the reconcile writes for an autoscaled role (None: not autoscaled, the spec decides).

    The live value is the scaler's (ours or the HPA's); a new Deployment starts at minReplicas.
    """
    auto = autoscaled(spec, role)
    if auto is None:
        return None
    if auto.engine == "operator" and pinned_by(spec, role, now) is not None:
        return 0
    if live is None:
        return auto.min_replicas
    if auto.engine == "keda":
        return live  # the HPA's value; KEDA clamps it itself
    return min(max(live, auto.min_replicas), auto.max_replicas)
