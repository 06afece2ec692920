"""The deliverer's consumer side: one Kafka consumer driven from one dedicated thread, per-partition
trackers of the offsets in flight (assign, revoke, lose), topic gating (pause/resume without losing
a batch), the commit of each partition's frontier, and the lag behind the alerts topic.

librdkafka's consumer is not meant to be driven from two threads, so every call on it (poll,
commit, close, and the rebalance callbacks that run inside poll) happens on ``_kexec``; the
trackers are shared with the event loop under ``_lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from alertpipe.workers.deliverer.backends import KafkaConsumer
from alertpipe.workers.deliverer.kafka_io import PartitionTracker

__all__ = ["AlertConsumer"]

logger = logging.getLogger(__name__)
_FATAL = getattr(KafkaError, "_FATAL", -150)
LAG_EVERY = 1.0  # seconds between two lag reports


def is_fatal(err: Any) -> bool:
    """A consumer error after which this consumer is finished (librdkafka's fatal errors, e.g.
    FENCED_INSTANCE_ID when another member took its group.instance.id); a message's error carries
    the code only."""
    return bool(err.fatal()) or err.code() == _FATAL

TP = tuple[str, int]


class AlertConsumer:
    """Reads the alerts (and retry) topics; commits, per partition, up to the lowest offset in flight."""

    def __init__(self, consumer: KafkaConsumer, batch_size: int) -> None:
        self._c = consumer
        self._batch = batch_size
        self._kexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliverer-consumer")
        self._lock = threading.Lock()
        self._trackers: dict[TP, PartitionTracker] = {}
        self._gated: frozenset[str] = frozenset()

    # --- event loop side -------------------------------------------------------------------------

    @property
    def assigned(self) -> bool:
        """True once a partition has been assigned (the deliverer is ready)."""
        return bool(self._trackers)

    async def subscribe(self, topics: list[str]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._kexec, self._subscribe, topics)

    async def poll(self, gated: frozenset[str]) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(self._kexec, self._poll, gated)

    def tracker(self, tp: TP) -> PartitionTracker | None:
        """The partition's tracker; None when it is no longer ours (the new owner delivers it)."""
        with self._lock:
            return self._trackers.get(tp)

    def owns(self, tp: TP, tracker: PartitionTracker) -> bool:
        """True while ``tracker`` is still the partition's (it was not revoked and assigned again)."""
        with self._lock:
            return self._trackers.get(tp) is tracker

    def add(self, tracker: PartitionTracker, offset: int, deliveries: int) -> None:
        with self._lock:
            tracker.add(offset, deliveries)

    def done(self, tp: TP, offset: int) -> None:
        """One delivery of the message at ``offset`` is terminal."""
        with self._lock:
            tr = self._trackers.get(tp)
            if tr is not None:
                tr.done(offset)

    async def commit_loop(
        self, stop: asyncio.Event, interval: float, lag: tuple[str, Callable[[int], None]] | None = None
    ) -> None:
        """Commit the frontiers every ``interval``; with ``lag`` (topic, report), report that topic's
        lag about once a second."""
        loop = asyncio.get_running_loop()
        reported = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if self._frontiers():
                await loop.run_in_executor(self._kexec, self._commit_sync)
            if lag is not None and time.monotonic() - reported >= LAG_EVERY:
                reported = time.monotonic()
                lag[1](await loop.run_in_executor(self._kexec, self._lag, lag[0]))

    async def close(self) -> None:
        """Commit what is terminal, leave the group, stop the consumer thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._kexec, self._commit_sync)
        try:
            await loop.run_in_executor(self._kexec, self._c.close)
        except KafkaException as exc:  # a consumer that failed for good may refuse a clean close
            logger.warning("consumer close: %s", exc)
        self._kexec.shutdown(wait=True)

    # --- consumer thread -------------------------------------------------------------------------

    def _subscribe(self, topics: list[str]) -> None:
        self._c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._trackers[(tp.topic, tp.partition)] = PartitionTracker()
        logger.info("assigned %s", [p.partition for p in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        offsets = []
        with self._lock:
            for tp in partitions:
                tr = self._trackers.pop((tp.topic, tp.partition), None)
                f = tr.frontier() if tr else None
                if f is not None:
                    offsets.append(TopicPartition(tp.topic, tp.partition, f))
        if offsets:
            with contextlib.suppress(KafkaException):
                consumer.commit(offsets=offsets, asynchronous=False)
        logger.info("revoked %s", [p.partition for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._trackers.pop((tp.topic, tp.partition), None)
        logger.warning("partitions lost %s", [p.partition for p in partitions])

    def _poll(self, gated: frozenset[str]) -> list[Any]:
        """Read what is there, with the partitions of the ``gated`` topics paused."""
        c = self._c
        if gated != self._gated:
            assignment = c.assignment()
            stop = [tp for tp in assignment if tp.topic in gated]
            go = [tp for tp in assignment if tp.topic not in gated]
            if stop:
                c.pause(stop)
            if go:
                c.resume(go)
            self._gated = gated
        # consume(n, timeout) waits for a full batch or the timeout: a trickle of alerts would
        # wait up to the timeout each. Block for the first message only, then take what is there.
        head = c.poll(0.1)
        if head is None:
            return []
        msgs: list[Any] = [head, *c.consume(num_messages=self._batch - 1, timeout=0)]
        if not gated:
            return msgs
        # Paused partitions return nothing; a partition assigned meanwhile may: put it back.
        kept = []
        first: dict[TP, int] = {}
        for msg in msgs:
            if msg.error() is None and msg.topic() in gated:
                first.setdefault((msg.topic(), msg.partition()), msg.offset())
            else:
                kept.append(msg)
        for (t, p), off in first.items():
            c.seek(TopicPartition(t, p, off))
        if first:
            c.pause([TopicPartition(t, p) for t, p in first])
        return kept

    def _lag(self, topic: str) -> int:
        """Messages of ``topic`` not yet terminal on the partitions owned: the high watermark as of
        the last fetch (no broker round trip) minus the lowest offset still in flight, else the next
        one to read."""
        with self._lock:
            starts = {p: (min(tr.pending) if tr.pending else tr.next_offset)
                      for (t, p), tr in self._trackers.items() if t == topic}
        total = 0
        for p, start in starts.items():
            tp = TopicPartition(topic, p)
            try:
                low, high = self._c.get_watermark_offsets(tp, cached=True)
                if start < 0:  # nothing read yet: from where the consumer will read
                    (pos,) = self._c.position([tp])
                    start = pos.offset if pos.offset >= 0 else low
            except Exception:  # noqa: BLE001, S112 - a metric; nothing fetched yet
                continue
            if high is not None and high >= 0 and start is not None and start >= 0:
                total += max(0, int(high) - int(start))
        return total

    def _commit_sync(self) -> None:
        offsets = self._frontiers()
        if offsets:
            try:
                self._c.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                logger.warning("offset commit failed (will retry): %s", exc)
                return
            with self._lock:
                for tp in offsets:
                    tr = self._trackers.get((tp.topic, tp.partition))
                    if tr is not None:
                        tr.committed = max(tr.committed, tp.offset)

    def _frontiers(self) -> list[TopicPartition]:
        with self._lock:
            out = []
            for (topic, part), tr in self._trackers.items():
                f = tr.frontier()
                if f is not None:
                    out.append(TopicPartition(topic, part, f))
            return out
