"""A keyed, delayed work queue with debouncing: the operator's reconcile scheduler.

``schedule(key, delay)`` keeps the *earliest* due time per key, so a burst of 100 rule edits runs a
pipeline's reconcile once at the first due time and once more after it (edits seen meanwhile), not
100 times, and latency stays bounded (a trailing-edge debounce could starve under constant edits).
A key never runs twice at once. Kopf's own per-object handlers cannot fan many AlertRules into one
pipeline reconcile, hence this small scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from alertpipe.operator import metrics

__all__ = ["WorkQueue", "earliest"]

logger = logging.getLogger(__name__)

Key = Hashable
Worker = Callable[[Key], Awaitable[float | None]]


def earliest(current: float | None, proposed: float) -> float:
    """The due time to keep when a key is scheduled again (the debounce decision)."""
    return proposed if current is None else min(current, proposed)


class WorkQueue:
    """Runs ``worker(key)`` when a key is due; the worker may return seconds after which to run again."""

    def __init__(
        self, worker: Worker, concurrency: int = 8, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._worker = worker
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._running: set[Key] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    def schedule(self, key: Key, delay: float = 0.0) -> None:
        self._due[key] = earliest(self._due.get(key), self._clock() + max(0.0, delay))
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
