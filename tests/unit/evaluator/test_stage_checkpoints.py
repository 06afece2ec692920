"""The three-step checkpoint of both evaluator stages, with fake clients: a cut's blobs reach
Redis only after every output produced before the cut is acknowledged, offsets are committed only
after the write, and a failure on the way moves nothing (the partitions stay dirty, the next
blob is a full one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from alertpipe.workers.evaluator.stage import CheckpointedStage, Outputs

pytestmark = pytest.mark.unit


class FakeProducer:
    """Keeps each record's delivery callback until ``answer`` (or flush) serves it."""

    def __init__(self) -> None:
        self.unanswered: list[tuple[str, Callable[[Any, Any], None]]] = []
        self.ready: list[tuple[Callable[[Any, Any], None], Any]] = []

    def produce(self, topic: str, value: Any, key: Any, on_delivery: Callable[[Any, Any], None],
                **_: Any) -> None:
        self.unanswered.append((topic, on_delivery))

    def answer(self, n: int, err: Any = None) -> None:
        """The broker answers the n oldest records (reports are served by the next poll)."""
        for _topic, cb in self.unanswered[:n]:
            self.ready.append((cb, err))
        del self.unanswered[:n]

    def poll(self, _timeout: float = 0) -> int:
        ready, self.ready = self.ready, []
        for cb, err in ready:
            cb(err, None)
        return len(ready)

    def flush(self, _timeout: float = 0) -> int:
        self.answer(len(self.unanswered))
        self.poll()
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[int, int]], bool]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))


class Inline:
    """An executor that runs a submitted write when told to (``run``), like a slow writer thread."""

    def __init__(self) -> None:
        self.queued: list[tuple[Future[None], Callable[..., None], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        fut: Future[None] = Future()
        self.queued.append((fut, fn, args))
        return fut

    def run(self) -> None:
        for fut, fn, args in self.queued:
            try:
                fn(*args)
                fut.set_result(None)
            except Exception as exc:  # noqa: BLE001 - handed to the stage, as a thread pool would
                fut.set_exception(exc)
        self.queued = []


class Holder:
    def __init__(self) -> None:
        self.saved_count = 0
        self.full_next = True

    def saved(self) -> None:
        self.saved_count += 1
        self.full_next = False


class Stage(CheckpointedStage):
    def __init__(self, producer: FakeProducer, writer: Inline) -> None:
        self.holders: dict[int, Holder] = {}
        self.written: list[list[tuple[int, bool, bytes]]] = []
        self.fail_write = False
        super().__init__("events", FakeConsumer(), Outputs(producer), writer, lambda: 0.0)  # type: ignore[arg-type]

    def _holder(self, p: int) -> Holder | None:
        return self.holders.get(p)

    def _restore(self, p: int) -> int | None:
        self.holders[p] = Holder()
        return None

    def _drop(self, ps: Sequence[int]) -> None:
        for p in ps:
            self.holders.pop(p, None)

    def _take(self, p: int) -> tuple[bool, bytes, list[dict[str, Any]]]:
        h = self.holders[p]
        full = h.full_next
        h.full_next = True  # until saved() confirms the write
        return full, b"%d@%d" % (p, self.positions[p]), []

    def _write(self, blobs: list[tuple[int, bool, bytes]], gaps: list[dict[str, Any]]) -> None:
        if self.fail_write:
            raise ConnectionError("redis down")
        self.written.append(blobs)


def stage_with(*partitions: int) -> tuple[Stage, FakeProducer, Inline]:
    producer, writer = FakeProducer(), Inline()
    st = Stage(producer, writer)
    for p in partitions:
        st._restore(p)
        st.positions[p] = 10 * (p + 1)
        st.dirty.add(p)
    return st, producer, writer


def commits(st: Stage) -> list[tuple[list[tuple[int, int]], bool]]:
    return st.consumer.commits  # type: ignore[attr-defined, no-any-return]


def test_the_write_waits_for_the_outputs_before_the_cut_and_the_commit_for_the_write() -> None:
    st, producer, writer = stage_with(0, 1)
    st.outputs.produce("alerts", b"a1", b"k")
    st.outputs.produce("alerts", b"a2", b"k")
    assert st.begin_checkpoint([0, 1])
    st.outputs.produce("alerts", b"after the cut", b"k")  # not the cut's: never waited for
    assert not st.dirty  # events evaluated from now on make them dirty again
    producer.answer(1)
    st.outputs.poll()
    st.advance()
    assert not writer.queued and not commits(st)
    producer.answer(1)
    st.outputs.poll()
    st.advance()
    assert len(writer.queued) == 1 and not commits(st)  # the write is on its way; no commit yet
    st.advance()
    assert not commits(st) and st.checkpointing
    writer.run()
    st.advance()
    assert st.written == [[(0, True, b"0@10"), (1, True, b"1@20")]]
    assert commits(st) == [([(0, 10), (1, 20)], True)]  # asynchronous: off the loop
    assert [st.holders[p].saved_count for p in (0, 1)] == [1, 1]
    assert not st.checkpointing


def test_one_checkpoint_in_flight_at_a_time() -> None:
    st, producer, writer = stage_with(0)
    st.outputs.produce("alerts", b"a", b"k")
    assert st.begin_checkpoint([0])
    st.dirty.add(0)
    assert not st.checkpoint_due(100.0, 1.0)
    assert not st.begin_checkpoint([0])
    producer.answer(1)
    st.outputs.poll()
    st.advance()
    writer.run()
    st.advance()
    assert st.checkpoint_due(100.0, 1.0)


def test_an_output_the_broker_refused_moves_nothing() -> None:
    st, producer, writer = stage_with(0)
    st.outputs.produce("alerts", b"a", b"k")
    st.begin_checkpoint([0])
    producer.answer(1, err="broker says no")
    st.outputs.poll()
    with pytest.raises(RuntimeError, match="not acknowledged.*broker says no"):
        st.advance()
    assert not writer.queued and not commits(st) and st.dirty == {0}
    assert st.holders[0].saved_count == 0


def test_a_failed_write_moves_nothing_and_the_next_blob_is_full() -> None:
    st, _producer, writer = stage_with(0)
    st.fail_write = True
    st.begin_checkpoint([0])
    st.advance()  # nothing to wait for: the write is submitted
    writer.run()
    with pytest.raises(ConnectionError):
        st.advance()
    assert not commits(st) and st.dirty == {0} and st.holders[0].saved_count == 0
    st.fail_write = False
    writer.submit = lambda fn, *args: _done(fn, *args)  # type: ignore[method-assign]
    st.checkpoint([0])
    assert st.written == [[(0, True, b"0@10")]]


def test_a_partition_lost_while_its_checkpoint_is_in_flight_is_neither_saved_nor_committed() -> None:
    st, _producer, writer = stage_with(0, 1)
    st.begin_checkpoint([0, 1])
    st.advance()
    st._on_lost(st.consumer, [TopicPartition("events", 1)])
    st._restore(1)  # and assigned again: a new holder, restored from Redis by now
    writer.run()
    st.advance()
    assert commits(st) == [([(0, 10)], True)]
    assert st.holders[1].saved_count == 0


def test_a_blocking_checkpoint_finishes_the_one_in_flight_first_and_commits_synchronously() -> None:
    st, _producer, writer = stage_with(0, 1)
    st.outputs.produce("alerts", b"a", b"k")
    st.begin_checkpoint([0])
    st.positions[0] = 15
    st.dirty.add(0)
    writer.submit = lambda fn, *args: _done(fn, *args)  # type: ignore[method-assign]
    st.checkpoint([0, 1])
    # the second is a delta for 0: the first was confirmed
    assert st.written == [[(0, True, b"0@10")], [(0, False, b"0@15"), (1, True, b"1@20")]]
    assert commits(st) == [([(0, 10)], False), ([(0, 15), (1, 20)], False)]


def test_a_revoked_partition_is_checkpointed_then_forgotten() -> None:
    st, _producer, writer = stage_with(0, 1)
    writer.submit = lambda fn, *args: _done(fn, *args)  # type: ignore[method-assign]
    st._on_revoke(st.consumer, [TopicPartition("events", 1)])
    assert st.written == [[(1, True, b"1@20")]] and commits(st) == [([(1, 20)], False)]
    assert 1 not in st.holders and 1 not in st.positions and st.dirty == {0}


def _done(fn: Callable[..., None], *args: Any) -> Future[None]:
    fut: Future[None] = Future()
    fn(*args)
    fut.set_result(None)
    return fut


def test_a_spread_cut_takes_one_partition_per_turn_and_waits_for_every_output_before_its_end() -> None:
    st, producer, writer = stage_with(0, 1, 2)
    st.outputs.produce("alerts", b"before", b"k")
    assert st.begin_checkpoint([0, 1, 2], spread=True)
    assert st.dirty == {1, 2} and st.checkpointing  # partition 0 taken, at offset 10
    assert not st.checkpoint_due(100.0, 1.0) and not st.begin_checkpoint([1], spread=True)
    st.positions[0] = 12
    st.dirty.add(0)  # evaluated after its cut: dirty again, for the next checkpoint
    st.outputs.produce("alerts", b"between the partitions' cuts", b"k")
    st.advance()
    assert st.dirty == {0, 2}
    st._on_lost(st.consumer, [TopicPartition("events", 2)])  # lost before its turn: skipped
    st.advance()  # the last turn closes the epochs: both outputs belong to the cut
    assert not writer.queued
    producer.answer(1)
    st.outputs.poll()
    st.advance()
    assert not writer.queued  # the output between the cuts is not acknowledged yet
    producer.answer(1)
    st.outputs.poll()
    st.advance()
    writer.run()
    st.advance()
    assert st.written == [[(0, True, b"0@10"), (1, True, b"1@20")]]
    assert commits(st) == [([(0, 10), (1, 20)], True)]
    assert st.dirty == {0} and not st.checkpointing


def test_a_blocking_checkpoint_finishes_a_spread_cut_first() -> None:
    st, _producer, writer = stage_with(0, 1)
    writer.submit = lambda fn, *args: _done(fn, *args)  # type: ignore[method-assign]
    st.begin_checkpoint([0, 1], spread=True)
    st.positions[1] = 25  # partition 1 not taken yet: the cut covers where it is when taken
    st._on_revoke(st.consumer, [TopicPartition("events", 1)])
    assert st.written == [[(0, True, b"0@10"), (1, True, b"1@25")]]
    assert commits(st) == [([(0, 10), (1, 25)], False)]
    assert not st.checkpointing and 1 not in st.holders
