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
