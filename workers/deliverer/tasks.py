"""The deliverer's running deliveries: one asyncio task per (alert, channel), counted by topic.

A task ends only with an outcome (its offset becomes committable) or cancelled (shutdown: the offset
stays uncommitted and is read again). An error no step expected — a Kafka client queue full for
good, a bug — starts the delivery again after a backoff. Dropping it would leave its offset
uncommitted and the alert unsent until the next restart, a missed page. The claim makes the rerun
safe: a send already marked delivered is skipped, and one not yet marked goes out again with the
same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from alertpipe.workers.deliverer import metrics as m
from alertpipe.workers.deliverer.metrics import child

__all__ = ["RETRY_FIRST", "RETRY_MAX", "DeliveryTasks"]

logger = logging.getLogger(__name__)

RETRY_FIRST = 0.5  # seconds before a delivery that failed unexpectedly starts again, doubling
RETRY_MAX = 30.0


class DeliveryTasks:
    """The tasks of the deliveries in flight: ``inflight`` from the alerts topic, ``inflight_retry``
    from the retry topic (each gates its own topic)."""

    def __init__(self, tenant: Callable[[], str]) -> None:
        self._tenant = tenant
        self.tasks: set[asyncio.Task[Any]] = set()
        self.inflight = 0
        self.inflight_retry = 0

    def pending(self) -> list[asyncio.Task[Any]]:
        return [t for t in self.tasks if not t.done()]

    def spawn(
        self, make: Callable[[], Awaitable[Any]], offset: int, on_outcome: Callable[[], None], retry: bool
    ) -> None:
        """Run ``make()`` until it returns an outcome, then call ``on_outcome``."""
        task = asyncio.create_task(self._until_done(make, offset))
        if retry:
            self.inflight_retry += 1
        else:
            self.inflight += 1
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if retry:
                self.inflight_retry -= 1
            else:
                self.inflight -= 1
            if not t.cancelled():  # cancelled: not terminal, the offset is read again
                on_outcome()

        task.add_done_callback(done)

    async def _until_done(self, make: Callable[[], Awaitable[Any]], offset: int) -> Any:
        delay = RETRY_FIRST
        while True:
            try:
                return await make()
            except Exception as exc:  # noqa: BLE001 - whatever it was, the delivery is started again
                child(m.DELIVERY_ERRORS, self._tenant()).inc()
                logger.error(
                    "the delivery at offset %d failed (%r); starting it again in %.1f s", offset, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
