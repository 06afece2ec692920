"""The CRD models of lag-driven autoscaling: ``spec.<role>.autoscaling`` and ``status.scaling.<role>``.

Kept apart from models.py (which re-exports them) because they are one feature's surface: the
behaviour section mirrors the HorizontalPodAutoscaler's ``behavior`` field by field, so the KEDA
engine hands it to KEDA unchanged and a user who knows the HPA knows what each knob does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alertpipe.workers.config.models import Model

__all__ = [
    "AutoscalingSpec",
    "Recommendation",
    "RoleScalingStatus",
    "ScaleEvent",
    "ScalingBehavior",
    "ScalingEngine",
    "ScalingPolicy",
]

ScalingEngine = Literal["operator", "keda"]


class ScalingPolicy(Model):
    """At most ``value`` pods (or percent of the replicas) added or removed per ``periodSeconds``."""

    type: Literal["Pods", "Percent"] = Field(description="Pods: a count; Percent: of the replicas then.")
    value: int = Field(ge=1, le=10_000, description="Pods, or percent, per period.")
    period_seconds: int = Field(ge=1, le=1800, description="The window the limit applies to.")


class ScalingBehavior(Model):
    """One direction of scaling, as the HPA's ``behavior.scaleUp`` / ``behavior.scaleDown``."""

    stabilization_window_seconds: int = Field(
        ge=0,
        le=3600,
        description="Look back this long: scale up to the lowest, down to the highest recommendation seen.",
    )
    select_policy: Literal["Max", "Min", "Disabled"] = Field(
        "Max", description="Max: the policy allowing the biggest change wins; Disabled: never this way."
    )
    policies: list[ScalingPolicy] = Field(
        default_factory=list, max_length=8, description="Step limits; none means no limit."
    )


def _scale_up() -> ScalingBehavior:
    # The HPA's own default: no window; double or add 4 pods per 15 s, whichever is more.
    return ScalingBehavior(
        stabilization_window_seconds=0,
        policies=[
            ScalingPolicy(type="Percent", value=100, period_seconds=15),
            ScalingPolicy(type="Pods", value=4, period_seconds=15),
        ],
    )


def _scale_down() -> ScalingBehavior:
    # The HPA's default window (5 min of recommendations) and step (any number per 15 s).
    return ScalingBehavior(
        stabilization_window_seconds=300,
        policies=[ScalingPolicy(type="Percent", value=100, period_seconds=15)],
    )


class AutoscalingSpec(Model):
    """Scale a role's Deployment on its consumer group's lag (events for the evaluator, alerts for
    the deliverer), fast enough to drain a backlog within ``targetDrainSeconds``."""

    enabled: bool = Field(False, description="Scale on lag; spec.<role>.replicas is then ignored.")
    engine: ScalingEngine = Field(
        "operator",
        description="operator: the operator sets replicas itself; keda: it writes a KEDA ScaledObject.",
    )
    min_replicas: int = Field(1, ge=0, le=1000, description="Never fewer (0 allows scaling to zero).")
    max_replicas: int = Field(10, ge=1, le=1000, description="Never more (canary tracks count too).")
    target_drain_seconds: int = Field(
        30, ge=1, le=86_400, description="How fast a backlog must be gone, on top of absorbing arrivals."
    )
    lag_threshold: int = Field(
        1000,
        ge=1,
        le=1_000_000_000,
        description="Lag one replica is expected to carry (KEDA's lagThreshold): the fallback"
        " ceil(lag / lagThreshold) while no service rate is known, and the KEDA trigger's value.",
    )
    activation_lag: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="With minReplicas 0: scale from zero only when lag exceeds this (KEDA's activation).",
    )
    scale_up: ScalingBehavior = Field(default_factory=_scale_up, description="How fast to add replicas.")
    scale_down: ScalingBehavior = Field(
        default_factory=_scale_down, description="How fast to remove replicas."
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must not exceed maxReplicas"
                f" ({self.max_replicas})"
            )
        return self


class Recommendation(Model):
    """One past decision's raw recommendation (for the stabilization windows)."""

    time: float = Field(description="Unix time of the decision.")
    replicas: int = Field(ge=0, description="Replicas recommended before stabilization.")


class ScaleEvent(Model):
    """One past replica change (for the step limits)."""

    time: float = Field(description="Unix time of the change.")
    change: int = Field(description="Replicas added (positive) or removed (negative).")


class RoleScalingStatus(Model):
    """What the scaler of one role last observed and decided; also its memory across restarts."""

    engine: ScalingEngine = Field("operator", description="Which engine scales this role.")
    lag: int | None = Field(None, ge=0, description="Total lag of the role's group (records).")
    max_partition_lag: int | None = Field(None, ge=0, description="Lag of the partition with the most.")
    max_lag_partition: int | None = Field(None, ge=0, description="That partition's number.")
    partitions: int | None = Field(None, ge=0, description="Partitions of the consumed topic.")
    arrival_rate: float | None = Field(None, ge=0, description="Records per second arriving (smoothed).")
    service_rate_per_replica: float | None = Field(
        None, ge=0, description="Records per second one busy replica consumes (smoothed)."
    )
    current_replicas: int | None = Field(None, ge=0, description="Replicas when the decision was made.")
    desired_replicas: int | None = Field(None, ge=0, description="Replicas decided.")
    reason: str = Field("", description="Why, in one line with the numbers.")
    last_scale_time: str | None = Field(None, description="When replicas last changed (RFC 3339).")
    observed_at: float | None = Field(None, description="Unix time of the last observation.")
    high_total: int | None = Field(None, ge=0, description="Sum of high watermarks then (for rates).")
    consumed_total: int | None = Field(
        None, ge=0, description="Sum of consumed positions (high - lag) then (for rates)."
    )
    recommendations: list[Recommendation] = Field(
        default_factory=list, max_length=400, description="Raw recommendations inside the windows."
    )
    scale_events: list[ScaleEvent] = Field(
        default_factory=list, max_length=400, description="Replica changes inside the policy periods."
    )
