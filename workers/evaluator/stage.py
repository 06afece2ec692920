"""What both evaluator stages share: outputs acknowledged per checkpoint epoch, and a consumer
whose partitions' state is checkpointed to Redis with the offset it covers.

A checkpoint runs in three steps, in order, and only the first one runs on the loop:
1. the cut (on the loop): each dirty partition's snapshot or delta and its next offset; the
   outputs produced up to this moment form the cut's epochs. A *spread* cut takes one partition
   per loop turn (``advance``), so the loop stalls for one partition's snapshot at a time, not for
   all of them at once: at 10k ev/s the whole cut took ~50 ms every second, which every event
   arriving meanwhile waited for — the p99. The epochs close after the last partition: a
   partition cut earlier waits for a few more acknowledgements than it needs, never for fewer;
2. once every output of those epochs is acknowledged (the loop's producer polls serve the
   reports), the blobs are written to Redis on a thread of their own;
3. once written (seen by the loop): the partitions are told (``saved``: the next may be a delta)
   and their offsets committed.
Kafka's committed offset therefore never passes the state in Redis, and the state in Redis never
covers an output that was not acknowledged — the order of the blocking checkpoint this replaces,
which held the loop (and every event arriving meanwhile) for the flush, the write and the commit.
One checkpoint is in flight at a time. Revocation, pause and shutdown take a blocking one
(``checkpoint``): it finishes the one in flight first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

__all__ = ["CheckpointedStage", "Outputs"]

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
ACK_TIMEOUT = 30.0  # seconds a cut's outputs may take to be acknowledged before the stage gives up


class _Epoch:
    """Outputs produced between two cuts, and how many of them the broker has answered."""

    __slots__ = ("acked", "errors", "produced")

    def __init__(self) -> None:
        self.produced = 0
        self.acked = 0
        self.errors: list[str] = []

    def ack(self, err: Any, _msg: Any) -> None:  # a delivery report, served by a producer poll
        self.acked += 1
        if err is not None:
            self.errors.append(str(err))

    @property
    def done(self) -> bool:
        return self.acked >= self.produced


class Outputs:
    """The stages' one idempotent producer; every record it produces belongs to the open epoch.

    ``cut()`` closes the open epoch and returns the epochs not yet answered: a checkpoint may be
    written once they are all answered without error. Delivery reports run on the thread that
    polls the producer (the loop: ``poll``, ``flush``), so the counters have one writer each.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._open = _Epoch()
        self._unanswered: list[_Epoch] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, *,
                headers: Headers | None = None, partition: int | None = None) -> None:
        epoch = self._open
        kw: dict[str, Any] = {"on_delivery": epoch.ack}
        if headers is not None:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        try:
            self.producer.produce(topic, value, key, **kw)
        except BufferError:  # the local queue is full (one event can fan out to many records)
            self._produce_when_room(topic, value, key, kw)
        epoch.produced += 1

    def _produce_when_room(self, topic: str, value: bytes | None, key: bytes | None,
                           kw: dict[str, Any]) -> None:
        deadline = time.monotonic() + 60
        while True:
            self.producer.poll(0.05)  # serve delivery reports: the queue drains
            try:
                self.producer.produce(topic, value, key, **kw)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise

    def cut(self) -> list[_Epoch]:
        self._unanswered = [e for e in self._unanswered if not e.done or e.errors]
        if self._open.produced:
            self._unanswered.append(self._open)
            self._open = _Epoch()
        return list(self._unanswered)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout: float) -> int:
        return int(self.producer.flush(timeout))


@dataclass(slots=True)
class _Cutting:
    """A spread cut under way: the partitions still to take, and what the taken ones gave."""

    todo: list[int]
    started: float
    offsets: dict[int, int] = field(default_factory=dict)
    blobs: list[tuple[int, bool, bytes]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    holders: dict[int, Any] = field(default_factory=dict)
    on_loop: float = 0.0


@dataclass(slots=True)
class _Cut:
    offsets: dict[int, int]
    blobs: list[tuple[int, bool, bytes]]
    gaps: list[dict[str, Any]]
    holders: dict[int, Any]  # the state object cut, per partition: told `saved` only if still held
    epochs: list[_Epoch]
    started: float
    write: Future[None] | None = field(default=None)


class CheckpointedStage:
    """A consumer of ``topic`` whose per-partition state lives in a subclass's holders (stage 1:
    engine partitions, stage 2: group stages): restore and seek on assignment, a blocking
    checkpoint on revocation, drop on loss, and the three-step checkpoint of the module docstring.

    Subclasses provide ``_holder``, ``_restore``, ``_drop``, ``_take`` and ``_write``.
    """

    label = "partition"  # in log lines

    def __init__(self, topic: str, consumer: Consumer, outputs: Outputs, writer: ThreadPoolExecutor,
                 clock: Callable[[], float]) -> None:
        self.topic = topic
        self.consumer = consumer
        self.outputs = outputs
        self.clock = clock
        self.positions: dict[int, int] = {}  # next offset to process, per assigned partition
        self.dirty: set[int] = set()
        self.paused = False
        self._writer = writer  # one thread: checkpoints land in Redis in cut order
        self._cut: _Cut | None = None
        self._cutting: _Cutting | None = None
        self._last_checkpoint = clock()

    # --- what a subclass holds -------------------------------------------------------------------

    def _holder(self, p: int) -> Any:
        """The state object of partition p, None when not held."""
        raise NotImplementedError

    def _restore(self, p: int) -> int | None:
        """Create p's state, from its checkpoint if there is one: the offset it covers, else None."""
        raise NotImplementedError

    def _drop(self, ps: Sequence[int]) -> None:
        """Forget the state of partitions no longer held."""
        raise NotImplementedError

    def _take(self, p: int) -> tuple[bool, bytes, list[dict[str, Any]]]:
        """(full, blob, gap records) of p at the cut, covering ``positions[p]``."""
        raise NotImplementedError

    def _write(self, blobs: list[tuple[int, bool, bytes]], gaps: list[dict[str, Any]]) -> None:
        """Write a cut's blobs (and gap records) to Redis in one transaction (on the writer thread)."""
        raise NotImplementedError

    def _saved(self, p: int) -> None:
        """p's blob of the cut is written (stage 1: the next one may be a delta on top of it)."""
        self._holder(p).saved()

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        """After the restores, before ``assign``: metrics, bookkeeping."""

    def _drain(self) -> None:
        """Before a revocation's checkpoint: finish what was read and not yet applied."""

    def _observe(self, took_on_loop: float, took: float) -> None:
        """A checkpoint's time on the loop (the cut) and from cut to commit."""

    # --- rebalance --------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            p = tp.partition
            offset = self._restore(p)
            if offset is not None:
                tp.offset = offset
                self.positions[p] = offset
                # dirty: the checkpoint may be ahead of the committed offset (a crash between the
                # two); a partition with nothing more to read would otherwise never commit it
                self.dirty.add(p)
                logger.info("%s %d: restored checkpoint, seeking to offset %d", self.label, p, offset)
            else:
                tp.offset = OFFSET_INVALID  # committed offset, else auto.offset.reset
        self._assigned(partitions)
        consumer.assign(partitions)
        if self.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ps = [tp.partition for tp in partitions]
        try:
            self._drain()
            self.checkpoint(ps)
        finally:
            self._forget(ps)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ps = [tp.partition for tp in partitions]
        logger.warning("%s(s) %s lost without revocation: dropping state (the new owner restores)",
                       self.label, ps)
        self._forget(ps)

    def _forget(self, ps: list[int]) -> None:
        for p in ps:
            self.positions.pop(p, None)
            self.dirty.discard(p)
        self._drop(ps)

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint_due(self, now: float, every: float) -> bool:
        return (bool(self.dirty) and self._cut is None and self._cutting is None
                and now - self._last_checkpoint >= every)

    def begin_checkpoint(self, partitions: Sequence[int], *, spread: bool = False) -> bool:
        """Step 1 (the cut) of the dirty ones of ``partitions``; False when one is in flight already.
        ``spread``: take the first partition now and one more on each ``advance``."""
        if self._cut is not None or self._cutting is not None:
            return False
        self._last_checkpoint = self.clock()
        ps = [p for p in partitions
              if p in self.dirty and p in self.positions and self._holder(p) is not None]
        if ps:
            self._cutting = _Cutting(ps, time.perf_counter())
            self._take_next(every=not spread)
        return True

    def _take_next(self, *, every: bool) -> None:
        """Take the next partition of the cut under way (``every``: all that are left), and close
        the cut's epochs once none is left."""
        c = self._cutting
        assert c is not None  # noqa: S101 - called only while cutting
        while c.todo:
            p = c.todo.pop(0)
            holder = self._holder(p) if p in self.positions else None
            if holder is None:  # lost or revoked since the cut began
                continue
            t0 = time.perf_counter()
            full, blob, g = self._take(p)
            c.offsets[p] = self.positions[p]
            c.blobs.append((p, full, blob))
            c.gaps.extend(g)
            c.holders[p] = holder
            self.dirty.discard(p)  # events evaluated from now on make it dirty again
            c.on_loop += time.perf_counter() - t0
            if not every:
                break
        if c.todo:
            return
        self._cutting = None
        if c.offsets:
            self._cut = _Cut(c.offsets, c.blobs, c.gaps, c.holders, self.outputs.cut(), c.started)
            self._on_loop = c.on_loop

    _on_loop = 0.0

    def advance(self, *, wait: bool = False) -> None:
        """Steps 2 and 3 of the checkpoint in flight, as far as they can go now (``wait``: to the end,
        blocking, with a synchronous commit); a spread cut's next partition first."""
        if self._cutting is not None:
            self._take_next(every=wait)
        cut = self._cut
        if cut is None:
            return
        if cut.write is None:
            if wait:
                self.outputs.flush(ACK_TIMEOUT)
            failed = [err for e in cut.epochs for err in e.errors]
            if failed or (not all(e.done for e in cut.epochs)
                          and (wait or time.perf_counter() - cut.started > ACK_TIMEOUT)):
                self._abandon(cut)
                left = sum(e.produced - e.acked for e in cut.epochs)
                # Not acknowledged: do not move the checkpoint; a restart replays from the previous one.
                why = "; ".join(failed[:3]) or "timeout"
                raise RuntimeError(f"{left} output(s) not acknowledged ({why}); not checkpointing")
            if not all(e.done for e in cut.epochs):
                return
            cut.write = self._writer.submit(self._write, cut.blobs, cut.gaps)
        if not wait and not cut.write.done():
            return
        try:
            cut.write.result()
        except BaseException:
            self._abandon(cut)
            raise
        self._cut = None
        held = [p for p in cut.offsets if self._holder(p) is cut.holders[p]]
        for p in held:
            self._saved(p)
        offsets = [TopicPartition(self.topic, p, cut.offsets[p]) for p in held]
        if offsets:
            try:
                if wait:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
                else:
                    self.consumer.commit(offsets=offsets, asynchronous=True)
            except Exception as exc:  # noqa: BLE001 - the Redis checkpoint is the source of truth
                logger.warning("%s offset commit failed (the checkpoint in Redis stands): %s",
                               self.label, exc)
        self._observe(self._on_loop, time.perf_counter() - cut.started)

    def _abandon(self, cut: _Cut) -> None:
        self._cut = None
        self.dirty.update(p for p in cut.offsets if self._holder(p) is cut.holders[p])

    def checkpoint(self, partitions: Sequence[int]) -> None:
        """A blocking checkpoint of ``partitions`` (after the one in flight, if any)."""
        self.advance(wait=True)
        self.begin_checkpoint(partitions)
        self.advance(wait=True)

    @property
    def checkpointing(self) -> bool:
        return self._cut is not None or self._cutting is not None
