"""The Evaluator's loop built with in-memory collaborators at its seams (EvaluatorClients): an events
topic, a producer that acknowledges on poll, and a dict for dedup keys and checkpoints. A device fires
and resolves once, a copy of an event is deduplicated, a malformed record is dead-lettered with its
reason, and a second Evaluator whose committed offset was lost restores the checkpoint and seeks to
its offset: nothing evaluated is raised again, and the device's next episode fires and resolves.
(Kafka and Redis themselves: tests/integration/evaluator.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition

from alertpipe.workers.config import PipelineConfig, StaticConfigSource
from alertpipe.workers.evaluator.clients import EvaluatorClients
from alertpipe.workers.evaluator.redis_state import DUPLICATE, NEW, SAME_RECORD
from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions
from tests.unit.deliverer.memory import Message  # the shape of a confluent_kafka.Message

pytestmark = pytest.mark.unit

EVENTS, ALERTS, DLQ = "e", "a", "d"


@dataclass
class Broker:
    """Topics of one partition each, and the committed offsets of the events topic."""

    topics: dict[str, list[Message]] = field(default_factory=dict)
    committed: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> Message:
        with self.lock:
            log = self.topics.setdefault(topic, [])
            rec = Message(topic, 0, len(log), key, value, headers)
            log.append(rec)
            return rec

    def read(self, topic: str) -> list[Message]:
        with self.lock:
            return list(self.topics.get(topic, []))


class MemoryConsumer:
    """The events topic's one partition: assigned at the first consume, read from its position."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.position: int | None = None
        self.paused = False
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        assert topics == [EVENTS]
        self.callbacks = callbacks

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if self.position is None:
            self.callbacks["on_assign"](self, [TopicPartition(EVENTS, 0)])
        assert self.position is not None
        out = [] if self.paused else self.broker.read(EVENTS)[self.position:self.position + num_messages]
        self.position += len(out)
        if not out and timeout > 0:
            time.sleep(min(timeout, 0.005))
        return out

    def assign(self, partitions: list[TopicPartition]) -> None:
        offset = partitions[0].offset
        self.position = offset if offset >= 0 else (self.broker.committed or 0)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(EVENTS, 0)]

    def pause(self, _: Any) -> None:
        self.paused = True

    def resume(self, _: Any) -> None:
        self.paused = False

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.broker.committed = offsets[0].offset

    def close(self) -> None:
        self.closed = True


class MemoryProducer:
    """Appends at once; the delivery reports come with the next poll or flush, as librdkafka's do."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.reports: list[tuple[Callable[[Any, Any], None], Message]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                on_delivery: Callable[[Any, Any], None] | None = None, headers: Any = None,
                partition: int | None = None) -> None:
        rec = self.broker.append(topic, key, value, headers)
        if on_delivery is not None:
            self.reports.append((on_delivery, rec))

    def poll(self, _timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for cb, rec in reports:
            cb(None, rec)
        return len(reports)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


class MemoryState:
    """RedisState's dedup flags and checkpoint chains, in dicts."""

    def __init__(self) -> None:
        self.owners: dict[bytes, tuple[int, int]] = {}
        self.chains: dict[int, tuple[bytes, list[bytes]]] = {}
        self.saves = 0

    def check(self, keys: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
              ttl_s: int) -> bytes:
        out = bytearray()
        for k, p, o in zip(keys, partitions, offsets, strict=True):
            owner = self.owners.get(k)
            if owner is None:
                self.owners[k] = (p, o)
            out.append(NEW if owner is None else SAME_RECORD if owner == (p, o) else DUPLICATE)
        return bytes(out)

    def load_chain(self, partition: int) -> tuple[bytes, list[bytes]] | None:
        return self.chains.get(partition)

    def save_chain(self, blobs: Iterable[tuple[int, bool, bytes]], gaps: Sequence[dict[str, Any]] = ()
                   ) -> None:
        for p, full, blob in blobs:
            if full:
                self.chains[p] = (blob, [])
            else:
                base, deltas = self.chains[p]
                self.chains[p] = (base, [*deltas, blob])
        self.saves += 1


def config() -> PipelineConfig:
    return PipelineConfig.model_validate({
        "tenant": "acme", "pipeline": "main", "allowedLateness": "2s", "idleTimeout": "1h",
        "kafka": {"bootstrapServers": "127.0.0.1:1", "topics": {
            "events": EVENTS, "alerts": ALERTS, "late": "l", "deadLetter": DLQ, "audit": "u"}},
        "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "p"},
        "rules": [{"name": "hot", "spec": {"threshold": {"condition": "value > 80"}}}],
    }).with_revision()  # fmt: skip


def send(broker: Broker, seq: int, ts: int, value: float, device: str = "d1") -> None:
    event = {"tenant": "acme", "deviceId": device, "seq": seq, "ts": ts, "type": "cpu", "value": value}
    broker.append(EVENTS, device.encode(), orjson.dumps(event))


def transitions(broker: Broker) -> list[tuple[str, str]]:
    alerts = (orjson.loads(r.value() or b"") for r in broker.read(ALERTS))
    return [(a["groupKey"], a["status"]) for a in alerts]


def run_until(broker: Broker, state: MemoryState, done: Callable[[], bool]) -> Evaluator:
    """An Evaluator on the in-memory clients, run in a thread until ``done()``, then stopped."""
    ev = Evaluator(StaticConfigSource(config()), options=EvaluatorOptions(checkpoint_interval=0.05),
                   clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), state))
    stop = threading.Event()
    t = threading.Thread(target=ev.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not done():
        assert t.is_alive(), "the evaluator's loop ended"
        assert time.monotonic() < deadline, transitions(broker)
        time.sleep(0.01)
    stop.set()
    t.join(20)
    assert not t.is_alive()
    return ev


def test_fires_resolves_dedups_dead_letters_and_a_restore_pages_nothing_twice() -> None:
    broker, state = Broker(), MemoryState()
    t0 = int(time.time() * 1000) - 120_000
    send(broker, 1, t0, 50)
    send(broker, 2, t0 + 6_000, 95)
    send(broker, 2, t0 + 6_000, 95)  # a copy (a client's retry): deduplicated, not a second page
    broker.append(EVENTS, b"d1", b"{not json")
    send(broker, 3, t0 + 9_000, 10)  # resolves
    send(broker, 4, t0 + 20_000, 10)
    first = run_until(broker, state, lambda: len(transitions(broker)) >= 2 and state.saves > 0)
    assert transitions(broker) == [("deviceId=d1", "firing"), ("deviceId=d1", "resolved")]
    dead = [orjson.loads(r.value() or b"") for r in broker.read(DLQ)]
    assert len(dead) == 1 and dead[0]["offset"] == 3 and dead[0]["reason"]
    assert first.consumer.closed  # type: ignore[attr-defined]
    # the loop stopped with a final checkpoint: state saved, then the offset after the last record
    assert state.chains.keys() == {0} and broker.committed == 6

    # a second process whose committed offset was lost: it restores the checkpoint and seeks to its
    # offset (without the restore it would read from 0 and page the first episode again)
    broker.committed = None
    send(broker, 5, t0 + 30_000, 99)
    send(broker, 6, t0 + 40_000, 10)
    run_until(broker, state, lambda: len(transitions(broker)) >= 4 and broker.committed == 8)
    alerts = [orjson.loads(r.value() or b"") for r in broker.read(ALERTS)]
    assert [(a["status"], a["eventTimeMs"] - t0) for a in alerts] == [
        ("firing", 6_000), ("resolved", 9_000), ("firing", 30_000), ("resolved", 40_000)]
    assert alerts[0]["id"] == alerts[1]["id"] != alerts[2]["id"] == alerts[3]["id"]  # two episodes


class FailsFirstCheck(MemoryState):
    """Redis down for the first dedup round trip (made on the dedup thread), answering after it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def check(self, keys: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
              ttl_s: int) -> bytes:
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.05)  # the loop prepares the next batch meanwhile
            raise ConnectionError("redis down")
        return super().check(keys, partitions, offsets, ttl_s)


def test_a_batch_whose_dedup_failed_is_never_skipped_by_the_final_checkpoint() -> None:
    """The first batch's dedup fails, the second's succeeds: the shutdown's drain must not evaluate
    the second and checkpoint past the first (its events would never be evaluated)."""
    broker, state = Broker(), FailsFirstCheck()
    t0 = int(time.time() * 1000) - 120_000
    for seq in range(1, 201):
        send(broker, seq, t0 + seq * 100, 10)
    ev = Evaluator(StaticConfigSource(config()),
                   options=EvaluatorOptions(checkpoint_interval=0.05, batch_size=100),
                   clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), state))
    with pytest.raises(ConnectionError):
        ev.run(threading.Event())  # the CLI starts again from the checkpoints
    assert state.calls >= 2  # the second batch was prepared while the first one's check ran
    saved = state.chains.get(0)
    assert saved is None or orjson.loads(saved[0])["offset"] == 0, "a checkpoint skipped a batch"
    assert ev.positions.get(0, 0) == 0
