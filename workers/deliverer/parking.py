"""Parking: deliveries written to the retry topic, and the ones read back from it waiting in memory.

A delivery that failed ``local_attempts`` times in a row, whose next backoff is longer than
``local_max_delay``, or whose channel's circuit is open is written to the retry topic with its
channel, attempts and not-before time (``park``), and its alert's offset becomes committable. Read
back, a record not yet due waits in a heap (``Waiting``) until ``release_loop`` starts it; one whose
channel's circuit is still open is held here rather than parked again. A parked firing notification
is remembered for a minute so the alert's resolve waits behind it (order per channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.deliverer import metrics as m
from alertpipe.workers.deliverer.backends import ClaimStore
from alertpipe.workers.deliverer.channels import ChannelTable
from alertpipe.workers.deliverer.context import DeliveryContext
from alertpipe.workers.deliverer.kafka_io import PartitionTracker
from alertpipe.workers.deliverer.metrics import child
from alertpipe.workers.deliverer.outcomes import Outcome, Outcomes, until_redis
from alertpipe.workers.deliverer.policy import BreakerState
from alertpipe.workers.deliverer.records import Parked

__all__ = ["Parking", "Waiting"]


@dataclass(order=True)
class Waiting:
    """A parked delivery read back from the retry topic, waiting for its not-before time."""

    due: float
    seq: int
    alert: Alert = field(compare=False)
    channel: str = field(compare=False)
    ctx: DeliveryContext = field(compare=False)
    tp: tuple[str, int] = field(compare=False)
    offset: int = field(compare=False)
    tracker: PartitionTracker = field(compare=False)


class Parking:
    """The retry topic (``topic``; None: the pipeline has none and retries wait in memory)."""

    def __init__(
        self,
        topic: str | None,
        *,
        config: Callable[[], PipelineConfig],
        channels: ChannelTable,
        claims: ClaimStore,
        outcomes: Outcomes,
        max_waiting: int,
        rand: Callable[[], float],
    ) -> None:
        self.topic = topic
        self._config = config
        self._channels = channels
        self._claims = claims
        self._outcomes = outcomes
        self._max_waiting = max_waiting
        self._rand = rand
        self._waiting: list[Waiting] = []  # heap by due time
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._parked_firing: dict[tuple[str, str], float] = {}  # (alert id, channel) -> due (firing)
        self._probe_released: dict[str, float] = {}  # channel -> monotonic time a held park went as probe

    def __len__(self) -> int:
        """Deliveries read back and not yet due."""
        return len(self._waiting)

    # --- writing a park --------------------------------------------------------------------------

    async def park(
        self,
        alert: Alert,
        name: str,
        ctx: DeliveryContext,
        delay: float,
        reason: str,
        *,
        attempts: int | None = None,
        first_ms: int | None = None,
        last_status: int | None = None,
        last_detail: str | None = None,
        release: bool = False,
        status_code: int | None = None,
        latency: float | None = None,
    ) -> Outcome:
        """Write the delivery to the retry topic (acked) and let its offset go: terminal for this pass."""
        topic = self.topic
        assert topic is not None  # noqa: S101 - only called with one
        due = time.time() + delay
        parked = Parked(
            channel=name,
            attempts=ctx.attempts if attempts is None else attempts,
            hops=ctx.hops + 1,
            not_before_ms=int(due * 1000),
            origin_ms=int(ctx.origin_s * 1000),
            produced_ms=int(ctx.produced_s * 1000),
            first_attempt_ms=ctx.first_ms if first_ms is None else first_ms,
            replay=ctx.replay,
            last_status=ctx.last_status if last_status is None else last_status,
            last_response=ctx.last_detail if last_detail is None else last_detail,
            trace=ctx.trace,
        )
        await self._outcomes.publish_until_acked(topic, alert.id, ctx.raw, parked.headers())
        if release:  # another worker may read the park back before our claim would expire
            await until_redis(self._claims.release, alert.delivery_key(name))
        if alert.status == "firing":
            if len(self._parked_firing) > 100_000:  # read back elsewhere (rebalance): forget the stale
                cut = time.time() - 60
                self._parked_firing = {k: v for k, v in self._parked_firing.items() if v > cut}
            self._parked_firing[(alert.id, name)] = due
        child(m.PARKED, self._config().tenant, name).inc()
        self._outcomes.log(
            alert,
            "parked",
            name,
            attempt=parked.attempts,
            status_code=status_code,
            latency_ms=round(latency * 1000, 2) if latency is not None else None,
            reason=f"{reason}; next attempt after {_iso(parked.not_before_ms)}",
            delay_s=round(delay, 3),
        )
        return Outcome.PARKED

    def firing_parked_until(self, alert: Alert, channel: str) -> float | None:
        """For a resolve: when its alert's parked firing notification to ``channel`` is due, if any."""
        if alert.status == "firing":
            return None
        behind = self._parked_firing.get((alert.id, channel))
        if behind is not None and behind + 60 < time.time():
            return None  # that park was read back elsewhere (a rebalance): do not wait for it
        return behind

    def firing_settled(self, alert_id: str, channel: str) -> None:
        """The firing notification ended other than parked: nothing to wait behind any more."""
        self._parked_firing.pop((alert_id, channel), None)

    # --- reading parks back ----------------------------------------------------------------------

    def wait_until_due(self, w: Waiting) -> None:
        heapq.heappush(self._waiting, w)
        if self._waiting[0] is w:
            self._wake.set()  # earlier than what the releaser sleeps for

    def waiting(
        self,
        due: float,
        alert: Alert,
        channel: str,
        ctx: DeliveryContext,
        tp: tuple[str, int],
        offset: int,
        tracker: PartitionTracker,
    ) -> Waiting:
        return Waiting(due, next(self._seq), alert, channel, ctx, tp, offset, tracker)

    async def release_loop(
        self,
        stop: asyncio.Event,
        start: Callable[[Waiting], None],
        owns: Callable[[tuple[str, int], PartitionTracker], bool],
    ) -> None:
        """Start each parked delivery read back from the retry topic once its not-before time comes."""
        while not stop.is_set():
            now = time.time()
            while self._waiting and self._waiting[0].due <= now:
                w = heapq.heappop(self._waiting)
                if not owns(w.tp, w.tracker):  # revoked meanwhile: the new owner reads it again
                    continue
                hold = self.hold_for_circuit(w, now)
                if hold > 0:
                    w.due = now + hold
                    heapq.heappush(self._waiting, w)
                    continue
                start(w)
            self._wake.clear()
            wait = min(0.5, self._waiting[0].due - now) if self._waiting else 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.001))

    def hold_for_circuit(self, w: Waiting, now: float) -> float:
        """Seconds to keep a due parked delivery in memory because its channel's circuit is open, or 0.

        Parking it again would write it to the retry topic and read it back once per cooldown,
        for nothing; held here it costs a heap entry. One of them is let go per cooldown as the
        probe. Not past half of ``max_retry_waiting`` (the retry topic must not pause for a dead
        channel) nor past the delivery's age budget (it is dead-lettered on time).
        """
        ch = self._channels.peek(w.channel)
        if ch is None or ch.breaker.state is BreakerState.CLOSED:
            return 0.0
        if len(self._waiting) >= self._max_waiting // 2:
            return 0.0
        b = ch.breaker
        mono = time.monotonic()
        start = b.opened_at if b.state is BreakerState.OPEN else b.probe_started
        reopen = start + b.cooldown
        released = self._probe_released.get(w.channel)
        if mono >= reopen and (released is None or mono - released >= b.cooldown):
            self._probe_released[w.channel] = mono  # this one goes: it takes the probe slot
            return 0.0
        hold = max(reopen - mono, 0.2) + self._rand() * min(b.cooldown, 1.0)
        if now - w.ctx.origin_s + hold > ch.budget.max_age:
            return 0.0
        return hold


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
