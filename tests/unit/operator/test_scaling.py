"""The scaling decision table, the HPA behaviour pieces, restart safety and a flapping property."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.operator.autoscaling import (
    AutoscalingSpec,
    Recommendation,
    RoleScalingStatus,
    ScaleEvent,
    ScalingBehavior,
    ScalingPolicy,
)
from alertpipe.operator.decisions.lag import GroupOffsets, LagSummary, PartitionOffsets, summarize
from alertpipe.operator.decisions.scaling import (
    ScalingDecision,
    ScalingInput,
    decide,
    scaling_conditions,
    stabilize,
    step_limit,
)

pytestmark = pytest.mark.unit


def lag_of(lags: list[int], at: float = 100.0, high: int = 0) -> LagSummary:
    """A summary with those lags per partition; every partition's high watermark is ``high + lag``."""
    parts = tuple(PartitionOffsets(i, 0, high + n, high) for i, n in enumerate(lags))
    return summarize(GroupOffsets("g", "t", parts, True, at), "earliest")


def auto(**kw: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"enabled": True, **kw})


def run(spec: AutoscalingSpec, lag: LagSummary | None, current: int, **kw: Any) -> ScalingDecision:
    kw.setdefault("available_replicas", current)
    return decide(ScalingInput("evaluator", spec, lag, kw.pop("now", 100.0), current, **kw))


def test_keda_formula_until_a_service_rate_is_known() -> None:
    d = run(auto(lagThreshold=1000), lag_of([1000] * 5 + [0]), current=1)
    assert (d.replicas, d.reason) == (5, "ScaledUp")  # ceil(5000 / 1000); step allows 1 -> 5
    assert "no service rate yet" in d.message and d.status.lag == 5000
    assert d.status.desired_replicas == 5 and d.status.last_scale_time is not None


def test_partition_cap_says_how_many_would_sit_idle() -> None:
    d = run(auto(lagThreshold=1000, maxReplicas=10), lag_of([4000] * 6), current=6)
    assert d.replicas == 6 and d.idle_excess == 4  # wants 24, budget 10, 6 partitions
    cap = {w.type: w for w in scaling_conditions({"evaluator": d})}["PartitionCapReached"]
    assert cap.status == "True" and "4 more replica(s) would sit idle" in cap.message


def test_drain_time_aware_with_a_known_service_rate() -> None:
    prev = RoleScalingStatus(
        lag=0, partitions=6, arrival_rate=300.0, service_rate_per_replica=100.0,
        observed_at=90.0, high_total=0, consumed_total=0, current_replicas=2,
    )  # fmt: skip
    # 3,000 arrived in 10 s, nothing consumed: arrival 300/s, lag 3,000 -> (300 + 3000/30) / 100 = 4
    d = run(auto(targetDrainSeconds=30), lag_of([500] * 6), current=2, previous=prev)
    assert d.replicas == 4 and d.status.arrival_rate == 300.0
    assert "needs 4.00 replica(s)" in d.message


def test_service_rate_is_taken_only_while_the_group_is_behind() -> None:
    prev = RoleScalingStatus(
        lag=5000, partitions=2, observed_at=0.0, high_total=10_000, consumed_total=5000, current_replicas=2
    )
    lag = summarize(
        GroupOffsets(
            "g", "t", (PartitionOffsets(0, 0, 5500, 3500), PartitionOffsets(1, 0, 5500, 3500)), True, 10.0
        ),
        "earliest",
    )  # 1,000 arrived, 2,000 consumed by 2 busy replicas in 10 s
    d = run(auto(lagThreshold=1000, targetDrainSeconds=30), lag, current=2, previous=prev, now=10.0)
    assert d.status.arrival_rate == 100.0 and d.status.service_rate_per_replica == 100.0
    assert d.replicas == 2  # (100 + 4000/30) / 100 = 2.33 -> 3 capped at 2 partitions
    caught_up = summarize(
        GroupOffsets(
            "g", "t", (PartitionOffsets(0, 0, 5500, 5490), PartitionOffsets(1, 0, 5500, 5490)), True, 10.0
        ),
        "earliest",
    )
    d2 = run(
        auto(lagThreshold=1000), caught_up, current=2, previous=prev.model_copy(update={"lag": 10}), now=10.0
    )
    assert d2.status.service_rate_per_replica is None  # keeping up: its rate is the arrival rate
    grew = run(
        auto(lagThreshold=1000), lag, current=2, previous=prev.model_copy(update={"lag": 10}), now=10.0
    )
    assert grew.status.service_rate_per_replica == 100.0  # a backlog grew past lagThreshold: busy


def test_tolerance_keeps_replicas_for_a_small_change() -> None:
    prev = RoleScalingStatus(service_rate_per_replica=100.0, arrival_rate=210.0)
    d = run(auto(), lag_of([0] * 6), current=2, previous=prev)  # need 2.1 at 2
    assert (d.replicas, d.reason) == (2, "Stable")


@pytest.mark.parametrize("current", [0, 3])
def test_missing_data_keeps_replicas_and_says_lag_unknown(current: int) -> None:
    d = run(auto(minReplicas=0), None, current=current, unknown_reason="Kafka unreachable")
    assert (d.replicas, d.reason) == (current, "LagUnknown")
    scaling = scaling_conditions({"evaluator": d})[0]
    assert scaling.status == "Unknown" and "Kafka unreachable" in scaling.message


def test_min_and_max_bound_the_recommendation() -> None:
    assert run(auto(minReplicas=2), lag_of([0] * 6), current=2).replicas == 2
    assert run(auto(maxReplicas=3, lagThreshold=10), lag_of([1000] * 6), current=3).replicas == 3


def test_other_tracks_share_the_max_budget() -> None:
    d = run(auto(maxReplicas=10, lagThreshold=10), lag_of([1000] * 6), current=1, other_tracks_replicas=8)
    assert d.replicas == 2


def test_scale_down_waits_for_the_stabilization_window() -> None:
    spec = auto(scaleDown={"stabilizationWindowSeconds": 60, "policies": []})
    prev = RoleScalingStatus(recommendations=[Recommendation(time=50.0, replicas=5)])
    assert run(spec, lag_of([0] * 6), current=5, previous=prev, now=100.0).replicas == 5
    d = run(spec, lag_of([0] * 6), current=5, previous=prev, now=111.0)
    assert (d.replicas, d.reason) == (1, "ScaledDown")


def test_step_limits_follow_hpa_policies() -> None:
    one_per_minute = ScalingBehavior(
        stabilization_window_seconds=0, policies=[ScalingPolicy(type="Pods", value=1, period_seconds=60)]
    )
    assert step_limit([], 1, 100.0, one_per_minute, up=True) == 2
    assert step_limit([ScaleEvent(time=90.0, change=1)], 2, 100.0, one_per_minute, up=True) == 2
    assert step_limit([ScaleEvent(time=30.0, change=1)], 2, 100.0, one_per_minute, up=True) == 3
    both = ScalingBehavior(
        stabilization_window_seconds=0,
        policies=[ScalingPolicy(type="Pods", value=4, period_seconds=15),
                  ScalingPolicy(type="Percent", value=100, period_seconds=15)],
    )  # fmt: skip
    assert step_limit([], 10, 0.0, both, up=True) == 20
    assert step_limit([], 0, 0.0, both, up=True) == 4  # from zero, Percent alone could never move
    assert step_limit([], 10, 0.0, both.model_copy(update={"select_policy": "Min"}), up=True) == 14
    assert step_limit([], 10, 0.0, both.model_copy(update={"select_policy": "Disabled"}), up=True) == 10
    half_down = ScalingBehavior(
        stabilization_window_seconds=0, policies=[ScalingPolicy(type="Percent", value=50, period_seconds=60)]
    )
    assert step_limit([], 10, 0.0, half_down, up=False) == 5
    spec = auto(lagThreshold=10, scaleUp=one_per_minute.model_dump(by_alias=True))
    assert run(spec, lag_of([1000] * 6), current=1).replicas == 2


def test_stabilize_up_takes_the_lowest_and_down_the_highest() -> None:
    up = ScalingBehavior(stabilization_window_seconds=30)
    down = ScalingBehavior(stabilization_window_seconds=60)
    recs = [Recommendation(time=80.0, replicas=3), Recommendation(time=50.0, replicas=8)]
    assert stabilize(recs, 6, 2, 100.0, up, down) == 3  # up to at most the lowest of the last 30 s
    assert stabilize(recs, 1, 6, 100.0, up, down) == 6  # down to at least the highest of the last 60 s


def test_hot_partition_does_not_scale_up_and_is_named() -> None:
    d = run(auto(lagThreshold=1000), lag_of([0, 0, 9000, 0, 0, 0]), current=1)
    assert d.replicas == 1 and d.hot == (2, 9000, 9000)
    hot = {w.type: w for w in scaling_conditions({"evaluator": d})}["HotPartition"]
    assert hot.status == "True" and "partition 2 holds 9000 of 9000" in hot.message
    spread = run(auto(lagThreshold=1000), lag_of([1500] * 6), current=1)
    assert spread.hot is None and spread.replicas == 5  # 9 wanted, step 1 -> max(1+4, 2)


def test_kill_switch_pins_zero() -> None:
    d = run(auto(minReplicas=2), lag_of([5000] * 6), current=4, pinned_by="kill switch stopEvaluation (x)")
    assert (d.replicas, d.reason) == (0, "KillSwitch")
    assert scaling_conditions({"evaluator": d})[0].status == "False"


def test_activation_lag_scales_to_and_from_zero() -> None:
    spec = auto(minReplicas=0, activationLag=100, scaleDown={"stabilizationWindowSeconds": 0})
    assert run(spec, lag_of([10] * 6), current=1).replicas == 0
    assert run(spec, lag_of([30] * 6), current=0).replicas == 1  # 180 > 100: one replica


def test_changed_partitions_keep_the_rates_for_a_round() -> None:
    prev = RoleScalingStatus(
        partitions=3, observed_at=90.0, high_total=0, consumed_total=0, arrival_rate=7.0, current_replicas=1
    )
    d = run(auto(), lag_of([0] * 6, high=10), current=1, previous=prev)
    assert d.status.arrival_rate == 7.0 and "partitions 3 -> 6" in d.message


def _simulate(
    spec: AutoscalingSpec,
    arrivals: list[float],
    capacity: float,
    partitions: int = 12,
    interval: float = 10.0,
    roundtrip: bool = False,
) -> tuple[list[int], list[int]]:
    """A queue fed ``arrivals[i]`` records/s for interval i, served by replicas x ``capacity``."""
    high = consumed = 0.0
    replicas, status = spec.min_replicas, None
    seen, lags = [], []
    for i, rate in enumerate(arrivals):
        now = i * interval
        high += rate * interval
        consumed = min(high, consumed + min(replicas, partitions) * capacity * interval)
        per = int(high - consumed) // partitions
        parts = tuple(
            PartitionOffsets(p, 0, int(high) // partitions, int(high) // partitions - per)
            for p in range(partitions)
        )
        lag = summarize(GroupOffsets("g", "t", parts, True, now), "earliest")
        d = decide(ScalingInput("evaluator", spec, lag, now, replicas, replicas, status))
        status = d.status
        if roundtrip:  # what a restarted operator reads back from status
            status = RoleScalingStatus.model_validate(status.model_dump(by_alias=True, mode="json"))
        replicas = d.replicas
        seen.append(replicas)
        lags.append(lag.total)
    return seen, lags


def test_decisions_survive_a_restart_through_status() -> None:
    spec = auto(maxReplicas=12, lagThreshold=500)
    rates = [200.0] * 30 + [2000.0] * 30 + [200.0] * 60
    assert _simulate(spec, rates, 250.0) == _simulate(spec, rates, 250.0, roundtrip=True)


def test_a_step_is_met_and_drained_then_scaled_back() -> None:
    spec = auto(maxReplicas=12, lagThreshold=500, targetDrainSeconds=30)
    rates = [200.0] * 30 + [2000.0] * 12 + [200.0] * 60
    seen, lags = _simulate(spec, rates, 250.0)
    assert max(seen[30:33]) > 1, seen[28:40]  # the step is answered within two intervals
    assert max(seen) >= math.ceil(2000 / 250)
    assert seen[-1] <= 2 and lags[-1] <= 500


# a statistical bound: the same 40 cases every run (random ones failed about once in a few hundred)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    noise=st.floats(0.0, 0.3),
    load=st.floats(200.0, 2000.0),
)
def test_noisy_steady_load_does_not_flap(seed: int, noise: float, load: float) -> None:
    """Steady arrivals with up to ±30 % noise per interval (HPA default behaviour, 5-minute down
    window): after the first 10 minutes no scale-down comes sooner than the window after a scale-up,
    and the replicas change at most 8 times in the next 50 minutes (a load at a replica boundary may
    honestly need one more replica during its peaks; a lag-only rule changes every few ticks)."""
    rng = random.Random(seed)
    spec = auto(maxReplicas=12, lagThreshold=500)
    rates = [load * (1 + rng.uniform(-noise, noise)) for _ in range(360)]  # an hour of 10 s steps
    seen, _ = _simulate(spec, rates, 250.0)
    settled = seen[60:]
    changes = [
        (i, settled[i] - settled[i - 1]) for i in range(1, len(settled)) if settled[i] != settled[i - 1]
    ]
    assert len(changes) <= 8, (changes, settled)  # 7 seen in 1 of ~700 random cases; KEDA: dozens
    for (t0, d0), (t1, d1) in zip(changes, changes[1:], strict=False):
        if d0 > 0 > d1:
            assert (t1 - t0) * 10 >= 300, (changes, settled)  # scaled down inside the window


def test_a_trim_within_tolerance_waits_a_bigger_one() -> None:
    spec = auto(scaleDown={"stabilizationWindowSeconds": 0})
    prev = RoleScalingStatus(service_rate_per_replica=100.0, arrival_rate=1000.0)
    d = run(spec, lag_of([0] * 12), current=11, previous=prev)  # needs 10: one rebalance for 9 %
    assert d.replicas == 11 and "within 10%: kept" in d.message
    assert run(spec, lag_of([0] * 12), current=13, previous=prev).replicas == 10


def test_a_rise_that_builds_backlog_is_sized_at_its_latest_rate() -> None:
    prev = RoleScalingStatus(
        lag=0, partitions=6, arrival_rate=200.0, service_rate_per_replica=250.0,
        observed_at=90.0, high_total=0, consumed_total=0, current_replicas=1, desired_replicas=1,
    )  # fmt: skip
    # 20,000 arrived in 10 s (2,000/s), 2,500 consumed: lag 17,500 grew past lagThreshold
    lag = summarize(
        GroupOffsets(
            "g",
            "t",
            tuple(PartitionOffsets(p, 0, 20_000 // 6, 20_000 // 6 - 17_500 // 6) for p in range(6)),
            True,
            100.0,
        ),
        "earliest",
    )
    d = run(auto(targetDrainSeconds=30, maxReplicas=20), lag, current=1, previous=prev)
    assert d.status.arrival_rate is not None and d.status.arrival_rate < 2000  # the smoothed figure
    assert "arrival 1999.8/s" in d.message, d.message  # sized at the latest rate
