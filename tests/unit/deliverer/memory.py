"""In-memory collaborators for the deliverer's seams (backends.Backends, senders.Sender): a broker
with topics, partitions, offsets and commits; a claim store with the two-phase states of claims.py;
a sender that replies from a script. They keep the real contracts (offsets, claim verdicts, acks),
so unit tests exercise the Deliverer's logic without Kafka, Redis or HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.exceptions
from confluent_kafka import TopicPartition

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import ChannelSpec, PipelineConfig, SecretKeyRef
from alertpipe.workers.deliverer.backends import ClaimStore, KafkaConsumer, Publisher
from alertpipe.workers.deliverer.claims import ClaimResult
from alertpipe.workers.deliverer.records import AuditEntry, DeadLetter, Parked, dead_letter_from_json
from alertpipe.workers.deliverer.senders import SendResult
from alertpipe.workers.errors import DeliveryError

Headers = list[tuple[str, bytes | None]]


@dataclass
class Message:
    """The shape of confluent_kafka.Message the deliverer reads."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: Headers | None = None
    _ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts_ms)

    def error(self) -> None:
        return None


def _b(v: bytes | str | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


class Broker:
    """Topics of partitions (lists of messages) and committed offsets per group; thread-safe."""

    def __init__(self, partitions: int = 2) -> None:
        self._lock = threading.Lock()
        self.partitions = partitions
        self.topics: dict[str, list[list[Message]]] = {}
        self.committed: dict[tuple[str, str, int], int] = {}  # (group, topic, partition) -> offset

    def _parts(self, topic: str) -> list[list[Message]]:
        return self.topics.setdefault(topic, [[] for _ in range(self.partitions)])

    def produce(
        self, topic: str, key: bytes | str | None, value: bytes, headers: Headers | None = None
    ) -> None:
        with self._lock:
            parts = self._parts(topic)
            k = _b(key)
            p = (sum(k) if k else 0) % len(parts)  # by key, like the default partitioner: stable
            parts[p].append(Message(topic, p, len(parts[p]), k, value, list(headers or []) or None))

    def read(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for part in self._parts(topic) for m in part]

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            return {p: len(msgs) for p, msgs in enumerate(self._parts(topic))}

    def group_committed(self, group: str, topic: str) -> dict[int, int]:
        with self._lock:
            return {p: o for (g, t, p), o in self.committed.items() if g == group and t == topic}

    # the deliverer's view ------------------------------------------------------------------------

    def audit(self, topic: str) -> list[AuditEntry]:
        return [AuditEntry.from_json(m.value() or b"") for m in self.read(topic)]

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        out = [dead_letter_from_json(m.value() or b"") for m in self.read(topic)]
        return [d for d in out if d is not None]

    def parked(self, topic: str) -> list[Parked]:
        return [Parked.from_headers(m.headers()) for m in self.read(topic)]


def _nothing(consumer: Any, partitions: list[TopicPartition]) -> None:
    return None


class MemoryConsumer:
    """One group member that is assigned every partition of the topics it subscribes to."""

    def __init__(self, broker: Broker, group: str) -> None:
        self._b = broker
        self._group = group
        self._pending_assign: list[TopicPartition] = []
        self._callbacks: dict[str, Any] = {}
        self._pos: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self.closed = False

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[[Any, list[TopicPartition]], None] = _nothing,
        on_revoke: Callable[[Any, list[TopicPartition]], None] = _nothing,
        on_lost: Callable[[Any, list[TopicPartition]], None] = _nothing,
    ) -> None:
        self._callbacks = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}
        with self._b._lock:
            for t in topics:
                for p in range(len(self._b._parts(t))):
                    self._pending_assign.append(TopicPartition(t, p))
                    self._pos[(t, p)] = self._b.committed.get((self._group, t, p), 0)

    def _rebalance(self) -> None:
        if self._pending_assign:
            tps, self._pending_assign = self._pending_assign, []
            self._callbacks["on_assign"](self, tps)

    def revoke_all(self) -> None:
        """A rebalance takes every partition away (on the consumer thread: call through ``poll``)."""
        self._callbacks["on_revoke"](self, [TopicPartition(t, p) for t, p in self._pos])
        self._pos.clear()

    def _next(self) -> Message | None:
        with self._b._lock:
            for (t, p), pos in self._pos.items():
                if (t, p) in self._paused:
                    continue
                msgs = self._b._parts(t)[p]
                if pos < len(msgs):
                    self._pos[(t, p)] = pos + 1
                    return msgs[pos]
        return None

    def poll(self, timeout: float) -> Message | None:
        self._rebalance()
        msg = self._next()
        if msg is None:
            time.sleep(min(timeout, 0.005))
        return msg

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        while len(out) < num_messages and (m := self._next()) is not None:
            out.append(m)
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._pos]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, partition: TopicPartition) -> None:
        self._pos[(partition.topic, partition.partition)] = partition.offset

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int]:
        with self._b._lock:
            return 0, len(self._b._parts(partition.topic)[partition.partition])

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self._pos.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]:
        with self._b._lock:
            for tp in offsets:
                self._b.committed[(self._group, tp.topic, tp.partition)] = tp.offset
        return offsets

    def close(self) -> None:
        self.closed = True


class MemoryPublisher:
    """Acked at once; ``fail_sends`` makes the next sends fail as a broker away would, ``fail_fires``
    the next fires as a producer queue full for good would."""

    def __init__(self, broker: Broker) -> None:
        self._b = broker
        self.fail_sends = 0
        self.fail_fires = 0
        self.closed = False

    async def send(self, topic: str, key: bytes | str, value: bytes, headers: Any = None) -> None:
        from confluent_kafka import KafkaException

        if self.fail_sends > 0:
            self.fail_sends -= 1
            raise KafkaException("broker transport failure (in-memory)")
        self._b.produce(topic, key, value, headers)

    def fire(self, topic: str, key: bytes | str, value: bytes) -> None:
        if self.fail_fires > 0:
            self.fail_fires -= 1
            raise BufferError("Local: Queue full (in-memory)")
        self._b.produce(topic, key, value)

    def close(self) -> None:
        self.closed = True


class ClaimTable:
    """The claim keys of one Redis prefix: owner while claimed, "d" delivered, "x" dead-lettered."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.away = 0  # the next calls fail as with Redis down
        self.refuse = 0  # the next calls are refused as by a Redis out of memory


class MemoryClaims:
    """claims.Claims' verdicts over a ``ClaimTable`` (claim expiry is not modelled: release instead)."""

    def __init__(self, table: ClaimTable, owner: str) -> None:
        self._t = table
        self._owner = "c:" + owner
        self.held: set[str] = set()
        self.renewing = False
        self.closed = False

    def _call(self) -> None:
        if self._t.away > 0:
            self._t.away -= 1
            raise redis.exceptions.ConnectionError("Connection refused (in-memory)")
        if self._t.refuse > 0:
            self._t.refuse -= 1
            raise redis.exceptions.OutOfMemoryError(
                "command not allowed when used memory > 'maxmemory' (in-memory)")

    async def acquire(self, delivery_key: str, *, replay: bool = False) -> ClaimResult:
        self._call()
        cur = self._t.state.get(delivery_key)
        if cur == "d":
            return ClaimResult.DELIVERED
        if cur == "x" and not replay:
            return ClaimResult.DEAD
        if cur is not None and cur.startswith("c:") and cur != self._owner:
            return ClaimResult.BUSY
        self._t.state[delivery_key] = self._owner
        return ClaimResult.OK

    def hold(self, delivery_key: str) -> None:
        self.held.add(delivery_key)

    def unhold(self, delivery_key: str) -> None:
        self.held.discard(delivery_key)

    async def mark_delivered(self, delivery_key: str) -> bool:
        self._call()
        ours = self._t.state.get(delivery_key) == self._owner
        self._t.state[delivery_key] = "d"
        return ours

    async def mark_dead(self, delivery_key: str) -> None:
        self._call()
        self._t.state[delivery_key] = "x"

    async def release(self, delivery_key: str) -> None:
        self._call()
        if self._t.state.get(delivery_key) == self._owner:
            del self._t.state[delivery_key]

    def start_renewing(self) -> None:
        self.renewing = True

    async def close(self) -> None:
        self.closed = True


class MemoryBackends:
    """backends.Backends over one Broker and one ClaimTable."""

    def __init__(self, broker: Broker | None = None, claims: ClaimTable | None = None) -> None:
        self.broker = broker or Broker()
        self.claim_table = claims or ClaimTable()
        self.consumers: list[MemoryConsumer] = []
        self.publishers: list[MemoryPublisher] = []
        self.closed = False

    def consumer(self, options: dict[str, Any]) -> KafkaConsumer:
        c = MemoryConsumer(self.broker, options["group.id"])
        self.consumers.append(c)
        return c

    def producer(self, options: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Publisher:
        p = MemoryPublisher(self.broker)
        self.publishers.append(p)
        return p

    def claims(
        self, config: PipelineConfig, secret: Callable[[SecretKeyRef], str], owner: str, claim_ttl: float
    ) -> ClaimStore:
        return MemoryClaims(self.claim_table, owner)

    async def close(self) -> None:
        self.closed = True


Reply = SendResult | DeliveryError


@dataclass
class Sent:
    alert_id: str
    channel: str
    key: str
    at: float


class ScriptedSender:
    """Replies per channel from a script, then ``default`` (a 200); records every send."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default: Reply = default or SendResult(200, "ok")
        self.scripts: dict[str, list[Reply]] = {}
        self.defaults: dict[str, Reply] = {}
        self.sent: list[Sent] = []

    def script(self, channel: str, replies: list[Reply]) -> None:
        self.scripts[channel] = list(replies)

    def on(self, channel: str) -> list[Sent]:
        return [s for s in self.sent if s.channel == channel]

    async def send(
        self, alert: Alert, channel: ChannelSpec, key: str, raw: bytes | None = None
    ) -> SendResult:
        self.sent.append(Sent(alert.id, channel.name, key, time.monotonic()))
        queue = self.scripts.get(channel.name)
        reply = queue.pop(0) if queue else self.defaults.get(channel.name, self.default)
        if isinstance(reply, DeliveryError):
            raise reply
        return reply
