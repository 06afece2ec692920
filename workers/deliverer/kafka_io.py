"""Kafka plumbing for the deliverer: client options from the config, a producer whose acks resolve
asyncio futures, and per-partition trackers of the alerts in flight (for the commit frontier).

confluent-kafka's calls block, so the producer is polled by its own thread and every consumer call
runs on one dedicated thread (librdkafka's consumer is not meant to be driven from two at once).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from alertpipe.workers.config import OFFSET_RESET, PipelineConfig, SecretKeyRef, kafka_options
from alertpipe.workers.deliverer.policy import commit_frontier
from alertpipe.workers.errors import ConfigError

__all__ = ["AsyncProducer", "PartitionTracker", "client_options", "consumer_options", "header_value"]

logger = logging.getLogger(__name__)


def client_options(config: PipelineConfig, secret: Any | None = None) -> dict[str, Any]:
    """librdkafka options common to every client of this pipeline (bootstrap, extras, SASL creds)."""
    ref = config.kafka.credentials_secret_ref
    if ref is None or secret is None:
        return kafka_options(config.kafka)

    def read(key: str) -> str | None:
        try:
            return str(secret(SecretKeyRef(name=ref.name, key=key)))
        except ConfigError:
            return None  # no such key in the Secret

    return kafka_options(config.kafka, read)


def consumer_options(options: dict[str, Any], group: str, instance_id: str | None) -> dict[str, Any]:
    """The alerts (and retry) topics' consumer: cooperative-sticky, manual commits, ``options``' extras."""
    return {
        # librdkafka's 45 s session timeout is how long the group stalls when a member stops in the
        # middle of a cooperative rebalance (its leave is lost): 10 s as the evaluator's, heartbeats
        # every second; clientOptions may still set either
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        **options,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": OFFSET_RESET,
        "enable.partition.eof": False,
        "partition.assignment.strategy": "cooperative-sticky",
        **({"group.instance.id": instance_id} if instance_id else {}),
    }


def header_value(headers: list[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The first value of header ``name`` (decoded), or None."""
    for k, v in headers or ():
        if k == name:
            return v.decode() if v is not None else ""
    return None


class AsyncProducer:
    """An idempotent producer (acks=all); ``send`` returns a future resolved by the broker's ack."""

    def __init__(self, options: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._p = Producer(
            {
                **options,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        self._stop = threading.Event()
        # acks are handed to the event loop in batches: one call_soon_threadsafe (a write to the
        # loop's self-pipe, a syscall) per poll instead of one per message
        self._acks: collections.deque[tuple[asyncio.Future[None], KafkaError | None]] = collections.deque()
        self._thread = threading.Thread(target=self._poll, name="deliverer-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._p.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._acks:
            return
        batch = []
        with contextlib.suppress(IndexError):
            while True:
                batch.append(self._acks.popleft())
        if batch:
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown: nobody waits
                self._loop.call_soon_threadsafe(_resolve_all, batch)

    def send(self, topic: str, key: bytes | str, value: bytes, headers: Any = None) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()

        def ack(err: KafkaError | None, _msg: Any) -> None:
            self._acks.append((fut, err))  # called inside poll(): the poll thread hands it over

        while True:
            try:
                self._p.produce(topic, value=value, key=key, headers=headers, on_delivery=ack)
                return fut
            except BufferError:
                # Queue full: the poll thread drains it; a short blocking wait here is the backpressure.
                self._p.poll(0.01)

    def fire(self, topic: str, key: bytes | str, value: bytes) -> None:
        """Produce without waiting for the ack (decision log); errors are logged by the callback."""
        try:
            self._p.produce(topic, value=value, key=key, on_delivery=_log_failure)
        except BufferError:
            self._p.poll(0.01)
            self._p.produce(topic, value=value, key=key, on_delivery=_log_failure)

    def flush(self, timeout: float = 10.0) -> int:
        remaining: int = self._p.flush(timeout)
        self._hand_over()
        return remaining

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=1.0)


def _resolve_all(batch: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
    for fut, err in batch:
        _resolve(fut, err)


def _resolve(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaException(err))


def _log_failure(err: KafkaError | None, msg: Any) -> None:
    if err is not None:
        logger.warning("decision log record to %s not written: %s", msg.topic(), err.str())


# clientOptions apply to every client; these would only make the producer log a warning
_CONSUMER_ONLY = frozenset(
    {
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "group.instance.id",
        "auto.offset.reset",
        "fetch.min.bytes",
        "fetch.wait.max.ms",
        "partition.assignment.strategy",
        "group.protocol",
        "isolation.level",
    }
)


@dataclass
class PartitionTracker:
    """Offsets of one partition read but not yet terminal (offset -> deliveries outstanding)."""

    next_offset: int = -1
    pending: dict[int, int] = field(default_factory=dict)
    committed: int = -1

    def add(self, offset: int, deliveries: int) -> None:
        self.next_offset = max(self.next_offset, offset + 1)
        if deliveries > 0:
            self.pending[offset] = self.pending.get(offset, 0) + deliveries

    def done(self, offset: int) -> None:
        left = self.pending.get(offset)
        if left is None:
            return
        if left <= 1:
            del self.pending[offset]
        else:
            self.pending[offset] = left - 1

    def frontier(self) -> int | None:
        """The offset to commit now, or None when nothing new can be committed."""
        if self.next_offset < 0:
            return None
        f = commit_frontier(self.pending.keys(), self.next_offset)
        return f if f > self.committed else None
