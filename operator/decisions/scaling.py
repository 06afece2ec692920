"""The scaling decision: replicas of one role from its lag, rates and the decisions before it.

A pure function of what the scaler observed (a LagSummary, or None when Kafka could not be asked)
and what it remembered in status (the previous observation, the recommendations inside the
stabilization windows, the scale events inside the step-limit periods), so it is unit-tested
without I/O and survives an operator restart. The steps, in order:

1. rates from successive observations: arrival = Δ high watermarks / Δt, service per replica =
   Δ consumed / Δt / busy replicas, taken only while the group was behind (lag above lagThreshold at
   both ends, or growing past it);
2. the recommendation: enough replicas to absorb arrivals and drain the backlog within
   targetDrainSeconds; KEDA's ceil(lag / lagThreshold) until a service rate is known; a hot
   partition (most of the lag on one partition) justifies no more replicas than the rest needs;
3. caps: the partition count (a consumer past it sits idle), min/max (less replicas of other
   tracks sharing the budget);
4. the HPA's behaviour: stabilization windows (up: the lowest, down: the highest recommendation of
   the window) and step limits per period (Pods / Percent policies, selectPolicy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alertpipe.operator.autoscaling import (
    AutoscalingSpec,
    Recommendation,
    RoleScalingStatus,
    ScaleEvent,
    ScalingBehavior,
)
from alertpipe.operator.decisions.conditions import Want
from alertpipe.operator.decisions.lag import LagSummary

__all__ = [
    "HOT_SHARE",
    "SCALING_CONDITIONS",
    "TOLERANCE",
    "ScalingDecision",
    "ScalingInput",
    "decide",
    "scaling_conditions",
    "step_limit",
    "stabilize",
]

TOLERANCE = 0.1  # as the HPA: a need within 10 % of the current replicas changes nothing
HOT_SHARE = 0.5  # one partition holding more than this share of the lag is hot
SMOOTHING = 0.5  # weight of the newest rate sample (exponential moving average)
STEP_RISE = 2.0  # an arrival sample this many times the smoothed rate, with growing backlog, is a step
SCALING_CONDITIONS = ("Scaling", "PartitionCapReached", "HotPartition")


@dataclass(frozen=True)
class ScalingInput:
    role: str
    spec: AutoscalingSpec
    lag: LagSummary | None  # None: the lag could not be observed
    now: float  # unix time
    current_replicas: int  # the Deployment's spec.replicas
    available_replicas: int
    previous: RoleScalingStatus | None = None
    other_tracks_replicas: int = 0  # replicas of other tracks (canary) counted against maxReplicas
    pinned_by: str | None = None  # a kill switch pinning replicas at 0 (its description)
    unknown_reason: str = "lag not observed"


@dataclass(frozen=True)
class ScalingDecision:
    replicas: int
    status: RoleScalingStatus
    reason: str  # ScaledUp, ScaledDown, Stable, LagUnknown, KillSwitch
    message: str
    idle_excess: int = 0  # replicas the partition cap cut (they would sit idle)
    hot: tuple[int, int, int] | None = None  # (partition, its lag, total lag)

    @property
    def changed(self) -> bool:
        return self.replicas != (self.status.current_replicas or 0)


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else SMOOTHING * sample + (1 - SMOOTHING) * old


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stabilize(
    recommendations: Sequence[Recommendation],
    raw: int,
    current: int,
    now: float,
    up: ScalingBehavior,
    down: ScalingBehavior,
) -> int:
    """The HPA's stabilization: scale up to at most the lowest recommendation of the up window, down
    to at least the highest of the down window (both including ``raw``)."""
    up_rec = down_rec = raw
    for r in recommendations:
        if r.time > now - up.stabilization_window_seconds:
            up_rec = min(up_rec, r.replicas)
        if r.time > now - down.stabilization_window_seconds:
            down_rec = max(down_rec, r.replicas)
    out = current
    if out < up_rec:
        out = up_rec
    if out > down_rec:
        out = down_rec
    return out


def step_limit(
    events: Sequence[ScaleEvent], current: int, now: float, behavior: ScalingBehavior, up: bool
) -> int:
    """The furthest ``current`` may move this way under ``behavior``'s policies (HPA semantics: the
    replicas at the start of each period, plus or minus what the policy allows)."""
    if behavior.select_policy == "Disabled":
        return current
    if not behavior.policies:
        return 10**9 if up else 0
    limits = []
    for p in behavior.policies:
        moved = sum(e.change for e in events if e.time > now - p.period_seconds and (e.change > 0) == up)
        start = current - moved
        if up:
            lim = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
            limits.append(max(lim, start + 1) if p.type == "Percent" and start == 0 else lim)
        else:
            limits.append(start - p.value if p.type == "Pods" else math.floor(start * (1 - p.value / 100)))
    pick = max if (behavior.select_policy == "Max") == up else min
    return pick(limits)


@dataclass
class _Rates:
    arrival: float | None = None  # smoothed (reported)
    service: float | None = None
    sizing: float | None = None  # the arrival rate sized for: the lower of smoothed and latest
    notes: list[str] = field(default_factory=list)


def _rates(inp: ScalingInput, lag: LagSummary, hot: bool) -> _Rates:
    prev = inp.previous
    out = _Rates(
        arrival=prev.arrival_rate if prev else None, service=prev.service_rate_per_replica if prev else None
    )
    if prev is None or prev.observed_at is None or prev.high_total is None or prev.consumed_total is None:
        return out
    dt = lag.at - prev.observed_at
    if dt <= 0:
        return out
    if prev.partitions != lag.partitions:
        out.notes.append(f"partitions {prev.partitions} -> {lag.partitions}: rates kept this round")
        return out
    arrived = max(0, lag.high_total - prev.high_total)
    consumed = max(0, lag.consumed_total - prev.consumed_total)
    out.arrival = _ewma(prev.arrival_rate, arrived / dt)
    # Sized for: a drop is followed at once (the scale-down window is the smoothing there: one step
    # down instead of a staircase); a rise is averaged, unless it is a step (over STEP_RISE times the
    # smoothed rate) that grew the backlog past lagThreshold: waiting a tick for the average would
    # cost drain time, while noise (which stays under that factor) must not buy replicas.
    sample = arrived / dt
    grew = lag.total > max(inp.spec.lag_threshold, prev.lag or 0)
    step = grew and prev.arrival_rate is not None and sample > STEP_RISE * prev.arrival_rate
    out.sizing = sample if step else min(out.arrival, sample)
    # the replicas that worked the interval: those the last decision set (and that came up)
    worked = prev.desired_replicas if prev.desired_replicas is not None else prev.current_replicas
    busy = min(worked or 0, inp.available_replicas, lag.partitions)
    # behind: a backlog beyond lagThreshold at both ends, or one growing past it (the consumers
    # took all they could; a group keeping up consumes what arrives, which says nothing of its speed)
    threshold = inp.spec.lag_threshold
    behind = min(prev.lag or 0, lag.total) > threshold or lag.total > max(threshold, prev.lag or 0)
    if behind and busy > 0 and not hot and consumed > 0:
        out.service = _ewma(prev.service_rate_per_replica, consumed / dt / busy)
    return out


def _hot(spec: AutoscalingSpec, lag: LagSummary) -> tuple[int, int, int] | None:
    if lag.partitions < 2 or lag.max_partition is None or lag.total <= spec.lag_threshold:
        return None
    if lag.max_lag <= HOT_SHARE * lag.total:
        return None
    return (lag.max_partition, lag.max_lag, lag.total)


def _trim(status: RoleScalingStatus, spec: AutoscalingSpec, now: float) -> RoleScalingStatus:
    window = max(spec.scale_up.stabilization_window_seconds, spec.scale_down.stabilization_window_seconds)
    period = max((p.period_seconds for b in (spec.scale_up, spec.scale_down) for p in b.policies), default=0)
    recs = [r for r in status.recommendations if r.time > now - window][-400:]
    events = [e for e in status.scale_events if e.time > now - period][-400:]
    return status.model_copy(update={"recommendations": recs, "scale_events": events})


def decide(inp: ScalingInput) -> ScalingDecision:
    """Replicas for one role now, the status that remembers why, and the condition inputs."""
    spec, now, current = inp.spec, inp.now, inp.current_replicas
    prev = inp.previous or RoleScalingStatus()
    base = prev.model_copy(update={"engine": "operator", "current_replicas": current})
    if inp.pinned_by is not None:
        message = f"{inp.pinned_by}: replicas pinned at 0"
        status = base.model_copy(update={"desired_replicas": 0, "reason": message})
        if current != 0:
            status = status.model_copy(update={"last_scale_time": _rfc3339(now)})
        return ScalingDecision(0, _trim(status, spec, now), "KillSwitch", message)
    lag = inp.lag
    if lag is None:
        # Never act on missing data: keep the replicas, forget the last observation's timing so the
        # next rate is not taken over the gap.
        message = f"{inp.unknown_reason}; keeping {current} replica(s)"
        status = base.model_copy(update={"desired_replicas": current, "reason": message})
        return ScalingDecision(current, _trim(status, spec, now), "LagUnknown", message)

    hot = _hot(spec, lag)
    rates = _rates(inp, lag, hot is not None)
    budget = max(0, spec.max_replicas - inp.other_tracks_replicas)
    why: list[str] = []
    if spec.min_replicas == 0 and lag.total <= spec.activation_lag:
        raw = 0
        why.append(f"lag {lag.total} <= activationLag {spec.activation_lag}")
    elif rates.service:
        arrival = rates.sizing if rates.sizing is not None else (rates.arrival or 0.0)
        need = (arrival + lag.total / spec.target_drain_seconds) / rates.service
        raw = current if current > 0 and abs(need / current - 1) <= TOLERANCE else math.ceil(need)
        why.append(
            f"arrival {arrival:.1f}/s + lag {lag.total} over {spec.target_drain_seconds}s"
            f" needs {need:.2f} replica(s) at {rates.service:.1f}/s each"
        )
    else:
        raw = math.ceil(lag.total / spec.lag_threshold)
        why.append(f"no service rate yet: ceil(lag {lag.total} / lagThreshold {spec.lag_threshold}) = {raw}")
    if lag.total > spec.activation_lag:
        raw = max(raw, 1)
    if hot is not None:
        rest = lag.total - hot[1]
        useful = max(current, 1 + math.ceil(rest / spec.lag_threshold))
        if raw > useful:
            why.append(f"partition {hot[0]} is hot: {useful} replica(s) at most help")
            raw = useful
    idle = max(0, min(raw, budget) - lag.partitions) if lag.partitions else 0
    upper = min(budget, lag.partitions) if lag.partitions else budget
    target = min(max(raw, spec.min_replicas), max(spec.min_replicas, upper))
    if idle:
        why.append(f"capped at {lag.partitions} partition(s): {idle} more would sit idle")

    stabilized = stabilize(prev.recommendations, target, current, now, spec.scale_up, spec.scale_down)
    if target >= 1 and 0 < current - stabilized <= TOLERANCE * current:
        # every change is a consumer-group rebalance: a trim of under 10 % waits for a bigger one
        why.append(f"trim {current} -> {stabilized} is within {TOLERANCE:.0%}: kept")
        stabilized = current
    final = stabilized
    if stabilized > current:
        final = min(stabilized, step_limit(prev.scale_events, current, now, spec.scale_up, up=True))
    elif stabilized < current:
        final = max(stabilized, step_limit(prev.scale_events, current, now, spec.scale_down, up=False))
    if final != target:
        why.append(f"recommended {target}, behaviour allows {final} now")
    events = list(prev.scale_events)
    if final != current:
        events.append(ScaleEvent(time=now, change=final - current))
    reason = "ScaledUp" if final > current else "ScaledDown" if final < current else "Stable"
    message = (
        f"{current} -> {final}: " + "; ".join(why + rates.notes)
        if final != current
        else (f"{current} replica(s): " + "; ".join(why + rates.notes))
    )
    status = base.model_copy(
        update={
            "lag": lag.total,
            "max_partition_lag": lag.max_lag,
            "max_lag_partition": lag.max_partition,
            "partitions": lag.partitions,
            "arrival_rate": None if rates.arrival is None else round(rates.arrival, 3),
            "service_rate_per_replica": None if rates.service is None else round(rates.service, 3),
            "desired_replicas": final,
            "reason": message,
            "last_scale_time": _rfc3339(now) if final != current else prev.last_scale_time,
            "observed_at": lag.at,
            "high_total": lag.high_total,
            "consumed_total": lag.consumed_total,
            "recommendations": [*prev.recommendations, Recommendation(time=now, replicas=target)],
            "scale_events": events,
        }
    )
    return ScalingDecision(final, _trim(status, spec, now), reason, message, idle, hot)


_RANK = {"ScaledUp": 0, "ScaledDown": 1, "KillSwitch": 2, "LagUnknown": 3, "Stable": 4}


def scaling_conditions(decisions: Mapping[str, ScalingDecision]) -> list[Want]:
    """Scaling, PartitionCapReached and HotPartition over the roles the operator scales."""
    roles = sorted(decisions)
    if not roles:
        return []
    lead = min(roles, key=lambda r: _RANK[decisions[r].reason])
    d = decisions[lead]
    status = {"LagUnknown": "Unknown", "KillSwitch": "False"}.get(d.reason, "True")
    scaling = Want("Scaling", status, d.reason, "; ".join(f"{r}: {decisions[r].message}" for r in roles))  # type: ignore[arg-type]
    capped = [r for r in roles if decisions[r].idle_excess]
    if capped:
        cap = Want(
            "PartitionCapReached",
            "True",
            "PartitionCapReached",
            "; ".join(
                f"{r}: at {decisions[r].status.partitions} partition(s), {decisions[r].idle_excess} more"
                " replica(s) would sit idle; add partitions to scale further"
                for r in capped
            ),
        )
    else:
        cap = Want("PartitionCapReached", "False", "BelowPartitionCap", "")
    hots = [r for r in roles if decisions[r].hot is not None]
    if hots:
        parts = []
        for r in hots:
            p, plag, total = decisions[r].hot or (0, 0, 0)
            parts.append(
                f"{r}: partition {p} holds {plag} of {total} lag ({100 * plag // max(1, total)}%):"
                " more replicas will not drain it faster; spread the keys"
            )
        hot = Want("HotPartition", "True", "HotPartition", "; ".join(parts))
    else:
        hot = Want("HotPartition", "False", "LagSpread", "")
    return [scaling, cap, hot]
