"""Scaling decision under a step load, simulated: our decision against KEDA's formula alone.

    .venv/bin/python -m bench.scaling.bench_scaling [--seed 1] [--service-rate 250]

A queue model (per-second steps) feeds the decision function every polling interval with offsets
as Kafka would report them: arrivals (base load, 10x for 2 minutes, then back; ±10 % noise) go to
``partitions`` partitions, each replica serves ``service-rate`` records/s on its partitions, a new
replica serves only after ``startup`` seconds. Two closed loops run on the same arrivals: ours
(decisions/scaling.decide) and KEDA's formula alone (ceil(lag / lagThreshold) with the HPA's 10 %
tolerance, capped by partitions, through the same HPA behaviour). At every tick KEDA's formula is
also computed on *our* loop's observation (a shadow), to count where the two would differ.
Prints JSON, writes results.json and scaling.png next to this file. Pure CPU, a second or two.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alertpipe.operator.autoscaling import AutoscalingSpec, Recommendation, RoleScalingStatus, ScaleEvent
from alertpipe.operator.decisions.lag import GroupOffsets, PartitionOffsets, summarize
from alertpipe.operator.decisions.scaling import TOLERANCE, ScalingInput, decide, stabilize, step_limit

HERE = Path(__file__).resolve().parent


@dataclass
class Loop:
    """One closed loop: the queue, its replicas, and what was recorded each second."""

    name: str
    partitions: int
    startup: float
    replicas: int
    high: list[float] = field(default_factory=list)
    consumed: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)  # per replica: when it serves from
    status: RoleScalingStatus | None = None
    t: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    reps: list[int] = field(default_factory=list)
    changes: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.high = [0.0] * self.partitions
        self.consumed = [0.0] * self.partitions
        self.started = [-1e9] * self.replicas

    def step(self, now: float, arrivals: float, rate: float, rng: random.Random) -> None:
        per = arrivals / self.partitions
        for p in range(self.partitions):
            self.high[p] += per
        serving = sum(1 for s in self.started if s <= now)
        # range assignment: replica i owns an even share of partitions; idle past the partition count
        owners = min(serving, self.partitions)
        for p in range(self.partitions):
            if owners == 0:
                break
            share = rate * owners / self.partitions  # records/s per partition at full speed
            self.consumed[p] = min(self.high[p], self.consumed[p] + share)
        self.t.append(now)
        self.lag.append(sum(h - c for h, c in zip(self.high, self.consumed, strict=True)))
        self.reps.append(self.replicas)

    def offsets(self, now: float) -> GroupOffsets:
        parts = tuple(
            PartitionOffsets(p, 0, int(self.high[p]), int(self.consumed[p])) for p in range(self.partitions)
        )
        return GroupOffsets("g", "events", parts, True, now)

    def set_replicas(self, now: float, n: int) -> None:
        if n != self.replicas:
            self.changes.append((now, self.replicas, n))
        if n > self.replicas:
            self.started += [now + self.startup] * (n - self.replicas)
        else:
            self.started = sorted(self.started)[:n]
        self.replicas = n


def keda_formula(spec: AutoscalingSpec, lag: int, current: int, partitions: int) -> int:
    """What KEDA's kafka scaler and the HPA recommend: ceil(lag / lagThreshold), HPA tolerance,
    allowIdleConsumers false (capped at partitions), min/max."""
    if current > 0 and abs(lag / (spec.lag_threshold * current) - 1) <= TOLERANCE:
        raw = current
    else:
        raw = math.ceil(lag / spec.lag_threshold)
    return min(max(raw, spec.min_replicas), min(spec.max_replicas, partitions))


def keda_step(
    spec: AutoscalingSpec, st: dict[str, Any], lag: int, current: int, now: float, parts: int
) -> int:
    """One HPA sync over KEDA's formula, with the HPA's own recommendation and event memory."""
    target = keda_formula(spec, lag, current, parts)
    recs: list[Recommendation] = st.setdefault("recs", [])
    events: list[ScaleEvent] = st.setdefault("events", [])
    n = stabilize(recs, target, current, now, spec.scale_up, spec.scale_down)
    if n > current:
        n = min(n, step_limit(events, current, now, spec.scale_up, up=True))
    elif n < current:
        n = max(n, step_limit(events, current, now, spec.scale_down, up=False))
    recs.append(Recommendation(time=now, replicas=target))
    if n != current:
        events.append(ScaleEvent(time=now, change=n - current))
    return n


def metrics(
    loop: Loop, spec: AutoscalingSpec, arrival: list[float], rate: float, step: tuple[float, float]
) -> dict[str, Any]:
    start, end = step
    up = next((t for t, a, b in loop.changes if t >= start and b > a), None)
    drained = None
    if up is not None:
        peak = max(range(len(loop.t)), key=lambda i: loop.lag[i] if loop.t[i] <= end + 60 else -1)
        drained = next(
            (loop.t[i] for i in range(peak, len(loop.t)) if loop.lag[i] <= spec.lag_threshold), None
        )
    used = float(sum(loop.reps))
    minimum = float(sum(max(spec.min_replicas, math.ceil(a / rate)) for a in arrival))
    up_edge = [c for c in loop.changes if start <= c[0] < end]
    down_edge = [c for c in loop.changes if c[0] >= end]
    return {
        "scale_up_decision_after_step_s": None if up is None else up - start,
        "lag_under_threshold_after_step_s": None if drained is None else drained - start,
        "lag_under_threshold_after_decision_s": None if drained is None or up is None else drained - up,
        "peak_lag": max(loop.lag),
        "peak_replicas": max(loop.reps),
        "replica_seconds": used,
        "replica_seconds_minimum": minimum,
        "replica_seconds_ratio": round(used / minimum, 3),
        "scale_changes_step_up": len(up_edge),
        "scale_changes_step_down": len(down_edge),
        "changes": [{"t": t, "from": a, "to": b} for t, a, b in loop.changes],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": args.partitions,
            "lagThreshold": args.lag_threshold,
            "targetDrainSeconds": args.drain,
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Percent", "value": 900, "periodSeconds": 10}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": args.down_window,
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
            },
        }
    )
    rng = random.Random(args.seed)
    step = (args.before, args.before + args.step_seconds)
    total = int(args.before + args.step_seconds + args.after)
    arrival = [
        args.base
        * (args.factor if step[0] <= t < step[1] else 1.0)
        * (1 + rng.uniform(-args.noise, args.noise))
        for t in range(total)
    ]
    ours = Loop("ours", args.partitions, args.startup, 1)
    keda = Loop("keda", args.partitions, args.startup, 1)
    keda_state: dict[str, Any] = {}
    shadow_differs = 0
    ticks = 0
    for t in range(total):
        now = float(t)
        for loop in (ours, keda):
            loop.step(now, arrival[t], args.service_rate, rng)
        if t % args.interval:
            continue
        ticks += 1
        available = sum(1 for s in ours.started if s <= now)
        d = decide(
            ScalingInput(
                "evaluator",
                spec,
                summarize(ours.offsets(now), "earliest"),
                now,
                ours.replicas,
                available,
                ours.status,
            )
        )
        lag_now = int(ours.lag[-1])
        shadow = keda_formula(spec, lag_now, ours.replicas, args.partitions)
        shadow_differs += int(shadow != d.status.recommendations[-1].replicas)
        ours.status = d.status
        ours.set_replicas(now, d.replicas)
        keda.set_replicas(
            now, keda_step(spec, keda_state, int(keda.lag[-1]), keda.replicas, now, args.partitions)
        )
    out: dict[str, Any] = {
        "scenario": {
            "base_per_s": args.base, "factor": args.factor, "step_s": args.step_seconds, "noise": args.noise,
            "service_rate_per_replica": args.service_rate, "partitions": args.partitions,
            "polling_interval_s": args.interval, "replica_startup_s": args.startup,
            "lag_threshold": args.lag_threshold, "target_drain_s": args.drain,
            "scale_down_window_s": args.down_window,
            "seed": args.seed,
        },
        "ours": metrics(ours, spec, arrival, args.service_rate, step),
        "keda_formula": metrics(keda, spec, arrival, args.service_rate, step),
        "shadow_ticks_where_keda_formula_differs": shadow_differs,
        "ticks": ticks,
    }  # fmt: skip
    o: dict[str, Any] = out["ours"]
    out["targets"] = {
        "decision_within_2_intervals": o["scale_up_decision_after_step_s"] is not None
        and o["scale_up_decision_after_step_s"] <= 2 * args.interval,
        "drained_within_target_plus_30s": o["lag_under_threshold_after_decision_s"] is not None
        and o["lag_under_threshold_after_decision_s"] <= args.drain + 30,
        "at_most_2_changes_per_step_edge": max(o["scale_changes_step_up"], o["scale_changes_step_down"]) <= 2,
        "replica_seconds_at_most_1_3x": o["replica_seconds_ratio"] <= 1.3,
    }
    plot(ours, keda, arrival, HERE / "scaling.png", args)
    return out


def plot(ours: Loop, keda: Loop, arrival: list[float], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    a1.plot(range(len(arrival)), arrival, color="grey")
    a1.set_ylabel("arrivals / s")
    for loop, color in ((ours, "tab:blue"), (keda, "tab:orange")):
        label = "ours" if loop is ours else "KEDA formula"
        a2.plot(loop.t, loop.lag, color=color, label=label)
        a3.step(loop.t, loop.reps, where="post", color=color, label=label)
    a2.axhline(args.lag_threshold, color="grey", linestyle=":", label="lagThreshold")
    a2.set_ylabel("lag (records)")
    a2.legend()
    a3.set_ylabel("replicas")
    a3.set_xlabel("seconds")
    a3.legend()
    a1.set_title(f"step {args.factor:g}x for {args.step_seconds:g} s, {args.service_rate:g}/s per replica")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base", type=float, default=200.0, help="records/s before and after the step")
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--step-seconds", type=float, default=120.0)
    ap.add_argument("--before", type=float, default=185.0, help="seconds before the step (mid-interval)")
    ap.add_argument("--after", type=float, default=300.0)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--service-rate", type=float, default=250.0, help="records/s one replica serves")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--interval", type=int, default=10, help="polling interval (s)")
    ap.add_argument("--startup", type=float, default=5.0, help="seconds before a new replica serves")
    ap.add_argument("--lag-threshold", type=int, default=1000)
    ap.add_argument("--drain", type=int, default=30, help="targetDrainSeconds")
    ap.add_argument("--down-window", type=int, default=30, help="scaleDown stabilizationWindowSeconds")
    args = ap.parse_args()
    out = run(args)
    (HERE / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
