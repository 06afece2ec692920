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


async def test_a_burst_of_schedules_gives_few_runs_and_never_two_at_once() -> None:
    runs: list[Hashable] = []
    running = 0
    overlap = False

    async def worker(key: Hashable) -> float | None:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        await asyncio.sleep(0.02)
        runs.append(key)
        running -= 1
        return None

    q = WorkQueue(worker)
    q.ready.set()
    task = asyncio.create_task(q.run())
    try:
        for _ in range(100):
            q.schedule("p", 0.05)
            await asyncio.sleep(0.001)
        await _until(lambda: q.idle and len(runs) >= 1)
        assert 1 <= len(runs) <= 3, runs
        assert not overlap
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
