"""A keyed, delayed work queue with debouncing: the operator's reconcile scheduler.

``schedule(key, delay)`` keeps the *earliest* due time per key. ``schedule(key, delay, max_wait=w)``
debounces on the trailing edge instead: every new change pushes the run ``delay`` further out, but
never past ``w`` after the first pending change, so a burst of 100 rule edits gives one or a few
reconciles and latency stays bounded by ``w`` plus one run. A key never runs twice at once.
Kopf's own per-object handlers cannot fan many AlertRules into one
pipeline reconcile, hence this small scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from alertpipe.operator import metrics

__all__ = ["WorkQueue", "debounced_due", "earliest"]

logger = logging.getLogger(__name__)

Key = Hashable
Worker = Callable[[Key], Awaitable[float | None]]


def earliest(current: float | None, proposed: float) -> float:
    """The due time to keep when a key is scheduled again (the debounce decision)."""
    return proposed if current is None else min(current, proposed)


def debounced_due(first: float | None, now: float, delay: float, max_wait: float) -> float:
    """Trailing-edge due time: ``now + delay``, but never later than ``first + max_wait``
    (``first``: when the oldest still-pending change was scheduled)."""
    start = now if first is None else first
    return min(now + delay, start + max_wait)


class WorkQueue:
    """Runs ``worker(key)`` when a key is due; the worker may return seconds after which to run again."""

    def __init__(
        self, worker: Worker, concurrency: int = 8, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._worker = worker
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._plain: dict[Key, float] = {}  # earliest-due schedules
        self._trailing: dict[Key, float] = {}  # debounced schedules
        self._first: dict[Key, float] = {}  # when the oldest pending debounced change was scheduled
        self._running: set[Key] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    def schedule(self, key: Key, delay: float = 0.0, max_wait: float | None = None) -> None:
        now = self._clock()
        if max_wait is None:
            self._plain[key] = earliest(self._plain.get(key), now + max(0.0, delay))
        else:
            self._trailing[key] = debounced_due(self._first.get(key), now, max(0.0, delay), max_wait)
            self._first.setdefault(key, now)
        self._due[key] = min(t for t in (self._plain.get(key), self._trailing.get(key)) if t is not None)
        metrics.QUEUE_DEPTH.set(len(self._due))
        self._wake.set()

    def pending(self, key: Key) -> bool:
        return key in self._due or key in self._running

    @property
    def idle(self) -> bool:
        return not self._due and not self._running

    async def _run_one(self, key: Key) -> None:
        try:
            again = await self._worker(key)
        except Exception:  # the worker reports its own errors; this keeps the loop alive
            logger.exception("reconcile of %s failed unexpectedly; retrying in 5 s", key)
            again = 5.0
        finally:
            self._running.discard(key)
            self._slots.release()
            self._wake.set()
        if again is not None:
            self.schedule(key, again)

    async def run(self) -> None:
        await self.ready.wait()
        while True:
            now = self._clock()
            due = sorted(
                ((t, k) for k, t in self._due.items() if k not in self._running and t <= now),
                key=lambda x: x[0],
            )
            for _, key in due:
                if self._slots.locked():
                    break
                await self._slots.acquire()
                del self._due[key]
                for table in (self._plain, self._trailing, self._first):
                    table.pop(key, None)
                self._running.add(key)
                task = asyncio.create_task(self._run_one(key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            metrics.QUEUE_DEPTH.set(len(self._due))
            waiting = [t for k, t in self._due.items() if k not in self._running]
            timeout = max(0.0, min(waiting) - self._clock()) if waiting else None
            self._wake.clear()
            if self._slots.locked():
                timeout = None  # a finishing task wakes us
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
