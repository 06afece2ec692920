"""kill -9 of each worker role under load at seeded random points, then a restart; a consumer group
growing and shrinking mid-stream. The ledger holds: nothing lost, nothing paged twice."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.chaos.conftest import MakeRig, scenario, verify
from tests.chaos.rig import ASSIGNED, PARTITIONS, Rig, sleep_until, wait_for

pytestmark = pytest.mark.chaos
SEEDS = {"evaluator": 101, "deliverer": 202, "ingestor": 303}  # kill points, reproducible


def kill_points(seed: int, n: int, first: float, last: float) -> list[float]:
    """``n`` seeded kill times (seconds into the stream) at least 3 s apart, in [first, last]."""
    rng = random.Random(seed)
    while True:
        pts = sorted(rng.uniform(first, last) for _ in range(n))
        if all(b - a >= 3.0 for a, b in zip(pts, pts[1:], strict=False)):
            return pts


def kill_and_restart(r: Rig, role: str, seed: int, n: int = 2) -> Callable[[float], None]:
    def chaos(t0: float) -> None:
        for at in kill_points(seed, n, 3.0, 11.0):
            sleep_until(t0 + at)
            w = r.live(role)[0]
            with r.fault(f"kill -9 {role}"):
                w.kill9()
                w.start()
                wait_for(w.ready, f"{role} ready again", 60, every=0.1)

    return chaos


@pytest.mark.parametrize("role", ["evaluator", "deliverer", "ingestor"])
def test_kill_9_under_load_loses_and_doubles_nothing(rig: MakeRig, unique: str, role: str) -> None:
    sc = scenario(unique, seed=11)
    r = rig(sc)
    ledger = r.stream(sc, kill_and_restart(r, role, seed=SEEDS[role]))
    assert ledger.complete(), ledger.summary()  # clients retried through the ingestor's restarts
    assert [f.name for f in r.faults] == [f"kill -9 {role}"] * 2
    assert r.workers[role][0].starts == 3
    verify(r, f"kill -9 {role} x2", ledger, fault_end=r.faults[-1].end)


def test_rebalance_1_3_1_evaluators_and_deliverers(rig: MakeRig, unique: str) -> None:
    """Both groups grow to three and shrink back to one mid-stream; the two extra deliverers stop
    right after their first assignment, inside the cooperative rebalance their joining started
    (an autoscaler that changes its mind): their leave is lost then, and the group waits for the
    session timeout before the survivor gets the partitions back."""
    sc = scenario(unique, seed=5, seconds=16.0)
    r = rig(sc)

    def chaos(t0: float) -> None:
        sleep_until(t0 + 2)
        with r.fault("scale 1 -> 3"):
            extra = [r.add(role, static=False) for role in ("evaluator", "deliverer") for _ in range(2)]
            wait_for(lambda: all("assigned [" in w.log.read_text() for w in extra if w.role == "deliverer"),
                     "the new deliverers' first assignment", 60)
        with r.fault("scale deliverers 3 -> 1 inside the rebalance"):
            for w in r.workers["deliverer"][1:]:
                w.stop()
        wait_for(lambda: r.workers["evaluator"][0].metric(ASSIGNED) < PARTITIONS,
                 "the evaluators sharing the partitions", 60)
        sleep_until(t0 + 10)
        with r.fault("scale evaluators 3 -> 1"):
            for w in r.workers["evaluator"][1:]:
                w.stop()

    ledger = r.stream(sc, chaos)
    assert ledger.complete(), ledger.summary()
    acc = verify(r, "rebalance 1 -> 3 -> 1", ledger, fault_end=r.faults[-1].end)
    # librdkafka's default session timeout (45 s) would hold the alerts this long; the deliverer's 10 s
    assert acc.max_delay_s is not None and acc.max_delay_s < 30, acc.table()
