"""The reconcile work queue: debouncing, one run per key at a time, requeue after a delay."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from alertpipe.operator.queue import WorkQueue, earliest

pytestmark = pytest.mark.unit


def test_earliest_keeps_the_first_due_time() -> None:
    assert earliest(None, 5.0) == 5.0
    assert earliest(3.0, 5.0) == 3.0
    assert earliest(7.0, 5.0) == 5.0


async def _until(cond, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_a_burst_of_schedules_gives_one_run_and_edits_during_a_run_one_more() -> None:
    runs: list[Hashable] = []
    running = 0
    overlap = False
    release = asyncio.Event()
    release.set()

    async def worker(key: Hashable) -> float | None:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        await release.wait()
        runs.append(key)
        running -= 1
        return None

    q = WorkQueue(worker)
    q.ready.set()
    task = asyncio.create_task(q.run())
    try:
        for _ in range(100):  # a burst: 100 edits before the queue gets to run
            q.schedule("p", 0.05)
        await _until(lambda: q.idle and len(runs) == 1)
        release.clear()
        q.schedule("p")
        await _until(lambda: running == 1)  # a run is in progress...
        for _ in range(100):  # ...and 100 more edits arrive meanwhile
            q.schedule("p")
        release.set()
        await _until(lambda: q.idle and len(runs) == 3)
        await asyncio.sleep(0.1)
        assert len(runs) == 3 and not overlap  # the in-flight run plus exactly one more
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_requeue_after_returned_delay_and_wait_for_ready() -> None:
    runs: list[Hashable] = []

    async def worker(key: Hashable) -> float | None:
        runs.append(key)
        return 0.01 if len(runs) < 3 else None

    q = WorkQueue(worker)
    task = asyncio.create_task(q.run())
    try:
        q.schedule("k")
        await asyncio.sleep(0.05)
        assert runs == []  # not before the watches listed everything
        q.ready.set()
        await _until(lambda: len(runs) == 3 and q.idle)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_merge_patch_nulls_removed_keys_and_skips_equal_ones() -> None:
    from alertpipe.operator.decisions.patch import merge_patch

    old = {
        "a": 1,
        "replicas": {"ingestor": {"desired": 1}, "evaluator": {"desired": 2}},
        "gone": "x",
        "same": [1],
    }
    new = {"a": 2, "replicas": {"evaluator": {"desired": 3}}, "same": [1], "added": True}
    assert merge_patch(old, new) == {
        "a": 2,
        "replicas": {"evaluator": {"desired": 3}, "ingestor": None},
        "gone": None,
        "added": True,
    }
    assert merge_patch(new, new) == {}


def test_debounced_due_trails_but_never_past_max_wait() -> None:
    from alertpipe.operator.queue import debounced_due

    assert debounced_due(None, 10.0, 0.2, 1.0) == 10.2  # first change
    assert debounced_due(10.0, 10.5, 0.2, 1.0) == 10.7  # each change pushes it out...
    assert debounced_due(10.0, 10.95, 0.2, 1.0) == 11.0  # ...but not past first + max_wait


async def test_trailing_schedule_gives_one_run_for_a_slow_burst() -> None:
    runs: list[float] = []
    clock = [0.0]

    async def worker(key: Hashable) -> float | None:
        runs.append(clock[0])
        return None

    q = WorkQueue(worker, clock=lambda: clock[0])
    q.ready.set()
    for i in range(10):  # ten edits 50 ms apart (fake clock): still inside one debounce window each
        clock[0] = i * 0.05
        q.schedule("p", 0.2, max_wait=1.0)
    assert q._due["p"] == pytest.approx(0.45 + 0.2)  # trailing edge after the last edit
    q.schedule("p")  # a plain, urgent schedule wins over the debounced one
    assert q._due["p"] == pytest.approx(0.45)
