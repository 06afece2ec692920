"""The evaluator worker: events topic → rule engine → alerts topic, with state checkpointed in Redis.

One loop (confluent-kafka's rebalance callbacks run inside ``consume``, so they land between
batches), a thread that runs the batches' Redis dedup round trips in consume order, and one that
writes checkpoints. A batch waits for its first record only (``poll_timeout``) and takes what
the client has fetched already; while the oldest batch's dedup round trip is in flight and more
records came in, those are decoded (up to ``dedup_depth`` batches in flight), so the loop waits on
Redis only when Redis is slower than the evaluation.
Per batch: decode (malformed → dead-letter topic), dedup in one Redis round trip, the lookup rows
its events may read (one more round trip for those not cached: lookups.py), feed the engine
in offset order (late → late topic), produce the alert transitions with an idempotent producer.
Every ``checkpoint_interval``: the three-step checkpoint of ``stage`` (the cut on the loop; the
Redis write once the cut's outputs are acknowledged, on its thread; then the commit), and a
blocking one on revocation, pause and shutdown.
A checkpoint covers the evaluated batches only; batches still in flight are not waited for: their
dedup keys already name their own ``partition:offset``, so a replay of them after a crash is
evaluated, not skipped (revocation, pause and shutdown do evaluate them first, to replay less).
On assignment: restore the snapshot and seek to its offset. Kafka's committed offset is therefore
never ahead of the state in Redis; a crash replays from the snapshot, and alert ids are
deterministic, so a replay repeats ids and never invents new ones.

Config reload, kill switches and the idleness rule are in ``control``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from alertpipe.workers.config import (
    ConfigSource,
    alert_filter,
    key_filter,
    parse_duration,
)
from alertpipe.workers.evaluator.clients import EvaluatorClients, group_worker
from alertpipe.workers.evaluator.control import RESTART, Control
from alertpipe.workers.evaluator.emitting import Emitting
from alertpipe.workers.evaluator.links import LinkHealth
from alertpipe.workers.evaluator.lookups import LookupCache
from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.native import NATIVE
from alertpipe.workers.evaluator.records import Batch, TopicSchemaCheck, dead_letter, decode_batch, headers
from alertpipe.workers.evaluator.redis_state import DUPLICATE as DUP_FLAG
from alertpipe.workers.evaluator.redis_state import dedup_key_parts, dedup_keys
from alertpipe.workers.evaluator.settings import (
    EvaluatorOptions,
    compile_rules,
    engine_settings,
)
from alertpipe.workers.evaluator.stage import CheckpointedStage, Outputs
from alertpipe.workers.evaluator.traced import TracedEvents
from alertpipe.workers.pii import policy_of as pii_policy
from alertpipe.workers.rules.engine import DUPLICATE, LATE, Engine, Partition
from alertpipe.workers.secrets import SecretResolver
from alertpipe.workers.tracing import TracingHolder, traceparent_of

__all__ = ["RESTART", "Evaluator", "EvaluatorOptions", "compile_rules", "engine_settings"]

logger = logging.getLogger(__name__)

SYNC_DEDUP_MAX = 64  # records: a batch up to this size makes its dedup round trip on the loop

class Evaluator(CheckpointedStage, Emitting, Control):
    """Runs one pipeline's evaluation until ``stop`` is set (or its connection settings change)."""

    def __init__(
        self,
        source: ConfigSource,
        *,
        options: EvaluatorOptions | None = None,
        secrets: SecretResolver | None = None,
        metrics: EvaluatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        clients: EvaluatorClients | None = None,
    ) -> None:
        cfg = source.current()
        if cfg is None:
            raise ValueError("no config revision loaded yet")
        self.source = source
        self.cfg = cfg
        self.opts = options or EvaluatorOptions()
        self.secrets = secrets or SecretResolver()
        self.metrics = metrics or EvaluatorMetrics(cfg.tenant)
        self.metrics.set_revision(cfg.revision)
        self.topics = cfg.kafka.topics
        clients = clients or EvaluatorClients.real(cfg, self.opts, self.secrets)
        self.lookups = LookupCache(clients.lookups, ttl_s=parse_duration(cfg.lookups.ttl),
                                   max_entries=cfg.lookups.max_entries, metrics=self.metrics)
        self.engine = Engine(engine_settings(cfg), compile_rules(cfg), clock=clock, lookups=self.lookups)
        self.metrics.rules.set(len(self.engine.rules))
        self.redis = clients.redis
        self.state = clients.state
        self.links = clients.links or LinkHealth(self.topics.events)  # without statistics: in touch
        self.dedup_ttl = int(parse_duration(cfg.dedup_ttl))
        self.idle_ms = round(parse_duration(cfg.idle_timeout) * 1000)
        self.pending_gaps: dict[int, list[dict[str, Any]]] = {}
        self.last_record: dict[int, float] = {}  # wall clock of the last record per partition
        self.assigned: set[int] = set()
        self.producer = clients.producer
        # checkpoints are written on a thread of their own: a large one never delays a dedup answer
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="evaluator-checkpoint")
        super().__init__(self.topics.events, clients.consumer, Outputs(self.producer), self._writes, clock)
        # Snapshots are whole partitions: with many group keys one takes long, so the interval
        # stretches to keep the cuts under ~10 % of the loop's time (replays grow accordingly).
        self._checkpoint_every = self.opts.checkpoint_interval
        self._last_housekeeping = 0.0
        self.batches = 0
        # one thread: the dedup scripts run in consume order (a copy is a duplicate of the earlier one)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="evaluator-dedup")
        self.groups = (group_worker(cfg, self.opts, self.secrets, self.redis, self.outputs, self._writes,
                                    self.engine, self.metrics, clock) if self.topics.repartition else None)
        self._pending: deque[Batch] = deque()
        # a fatal consumer error (e.g. FENCED_INSTANCE_ID after the group coordinator's broker died):
        # this consumer is finished; run() ends with RESTART and the CLI starts a new Evaluator
        self.fatal: Any = None
        self._waited = 0.0  # of the last _prepare: a dedup round trip made on the loop's thread
        # a canary track's share of the keys (None: all); checked on the Kafka key, before decoding
        self.track_keys = key_filter(cfg.track)
        self.track_alerts = alert_filter(cfg.track)
        self._schema_check = TopicSchemaCheck()
        # spec.tracing: a span per alert raised by an event whose record carries a sampled trace context
        self.tracing = TracingHolder("evaluator", lambda ref: self.secrets.resolve(ref).get_secret_value())
        self.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
        self.traced = TracedEvents()  # sampled events, to find the trace of the alert one raised

    # --- the stage's state (CheckpointedStage) -----------------------------------------------------

    def _holder(self, p: int) -> Partition | None:
        return self.engine.partitions.get(p)

    def _restore(self, p: int) -> int | None:
        part = self.engine.partition(p)
        self.assigned.add(p)
        self.last_record[p] = self.clock()
        chain = self.state.load_chain(p)
        if chain is None:
            return None
        meta = part.restore(*chain)
        if self.lookups.active(self.engine.rules):  # the rows of the restored waiting events
            self.lookups.prefetch(self.engine.rules, part.held_events())
        if part.ctx.out:  # rules changed while no process ran: their episodes resolve
            self._emit(part, p)
        return int(meta["offset"])

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self.metrics.assigned.set(len(self.assigned))

    def _drain(self) -> None:
        """Evaluate the batches whose dedup round trips are in flight (before a revoke, pause, stop)."""
        pending = self._pending
        while pending:
            self._evaluate(pending.popleft())

    def _drop(self, ps: Any) -> None:
        for p in ps:
            self.engine.drop(p)
            self.pending_gaps.pop(p, None)
            self.assigned.discard(p)
            self.traced.forget(p)
            if self.groups is not None:
                self.groups.forget_upstream(p)
            for gauge in (self.metrics.lag, self.metrics.watermark_delay, self.metrics.checkpoint_bytes):
                try:
                    gauge.remove(str(p))
                except KeyError:
                    pass
        self.metrics.assigned.set(len(self.assigned))

    def _take(self, p: int) -> tuple[bool, bytes, list[dict[str, Any]]]:
        # a delta of what changed since the last checkpoint, or a full snapshot (engine.checkpoint)
        full, blob = self.engine.partitions[p].checkpoint(offset=self.positions[p])
        self.metrics.checkpoint_bytes.labels(str(p)).set(len(blob))
        self.metrics.checkpoints.labels("full" if full else "delta").inc()
        return full, blob, self.pending_gaps.pop(p, [])

    def _write(self, blobs: list[tuple[int, bool, bytes]], gaps: list[dict[str, Any]]) -> None:
        self.state.save_chain(blobs, gaps)

    def _observe(self, took_on_loop: float, took: float) -> None:
        self.metrics.loop_seconds["checkpoint"] += took_on_loop
        self._checkpoint_every = max(self.opts.checkpoint_interval, min(60.0, 10 * took_on_loop))
        self.metrics.checkpoint_seconds.observe(took)

    # --- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> str | None:
        self.consumer.subscribe([self.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        logger.info("evaluator: %d rule(s), revision %s, topic %s, %s decode path", len(self.engine.rules),
                    self.cfg.revision, self.topics.events, "native" if NATIVE else "pure Python")
        if self.groups is not None:
            self.groups.start()
        result: str | None = None
        pending = self._pending
        depth = max(1, self.opts.dedup_depth)
        full = self.opts.batch_size
        loop = self.metrics.loop_seconds
        perf = time.perf_counter
        try:
            next_reload = 0.0
            while not stop.is_set():
                t0 = perf()
                if t0 >= next_reload:  # a config revision or a kill switch is seen within 20 ms
                    next_reload = t0 + 0.02
                    if self._reload() == RESTART:
                        result = RESTART
                        break
                    t0 = perf()
                # with batches in flight, do not sit in consume: their answers may be ready
                msgs = self.consumer.consume(full, 0) if pending else self._next_batch(full)
                t1 = perf()
                loop["consume"] += t1 - t0
                if msgs:
                    self._waited = 0.0
                    pending.append(self._prepare(msgs))
                    loop["decode"] += perf() - t1 - self._waited
                fatal = self.fatal or (self.groups.fatal if self.groups is not None else None)
                if fatal is not None:
                    logger.error("evaluator: Kafka consumer failed for good (%s); starting a new one from"
                                 " the checkpoints", fatal)
                    result = RESTART
                    break
                # While the oldest batch's dedup round trip runs on the dedup thread and more records
                # came in, decode those (up to `depth` batches in flight); otherwise wait for it here.
                while pending and (
                    not msgs or len(pending) > depth or not isinstance(head := pending[0].seen, Future)
                    or head.done()
                ):
                    self._evaluate(pending.popleft())
                if self.groups is not None:
                    self.groups.step(self.clock())
                self.outputs.poll()
                self.advance()
                now = self.clock()
                if now - self._last_housekeeping >= self.opts.housekeeping_interval:
                    t2 = perf()
                    self._housekeeping(now)
                    loop["housekeeping"] += perf() - t2
                if self.checkpoint_due(now, self._checkpoint_every):
                    self.begin_checkpoint(sorted(self.dirty), spread=True)
                    self.advance()
        finally:
            self.close()
        return result

    def close(self) -> None:
        try:
            self._drain()
            self.checkpoint(sorted(self.assigned))
        except Exception:  # noqa: BLE001 - shutting down: the next owner replays from the last checkpoint
            logger.exception("final checkpoint failed; the next owner replays from the previous one")
        try:
            self.consumer.close()
        except KafkaException as exc:  # a consumer that failed for good may refuse a clean close
            logger.warning("consumer close: %s", exc)
        if self.groups is not None:
            self.groups.close()
        self.producer.flush(10)
        self._pool.shutdown(wait=True)
        self._writes.shutdown(wait=True)
        self.tracing.shutdown()

    def _next_batch(self, full: int) -> list[Any]:
        """Up to ``full`` records, waiting (``poll_timeout``) for the first one only.

        ``consume(n, timeout)`` returns after n records or the timeout: below n / timeout records
        a second every batch waited the whole timeout (bench/e2e: ingested -> evaluated p50 61 ms at
        1k ev/s). The rest is what the client has fetched already. ``consume(1, …)`` rather than
        ``poll``: the two handle a rebalance callback's exception alike, but consume returns a list.
        """
        head = self.consumer.consume(1, self.opts.poll_timeout)
        if not head or full <= 1:
            return list(head)
        return [*head, *self.consumer.consume(full - 1, 0)]

    def process(self, msgs: list[Any]) -> None:
        """One consumed batch: decode, dedup (one Redis round trip), evaluate, produce."""
        self._evaluate(self._prepare(msgs))

    def _prepare(self, msgs: list[Any]) -> Batch:
        """Decode and start the batch's dedup round trip (on the dedup thread); no state changes."""
        prefix, tenant = self.cfg.redis.key_prefix, self.cfg.tenant
        key_of = dedup_keys(prefix, tenant) if self.opts.dedup else None
        now_ms = int(self.clock() * 1000)
        skew_ms = round(parse_duration(self.cfg.ingest.max_future_skew) * 1000)
        d = decode_batch(msgs, tenant, self.track_keys, key_of, now_ms, skew_ms,
                         self._schema_check.of(self.cfg.event_schema), dedup_key_parts(prefix, tenant))
        self.fatal = self.fatal or d.fatal
        now = self.clock()
        last = self.last_record
        for p in {item[1] for item in d.items}:
            last[p] = now
        self.metrics.consumed.inc(len(msgs))
        if d.skipped:
            self.metrics.skipped.inc(d.skipped)
        if not d.keys:
            return Batch(d.items, None)
        check = self.state.check
        if not self._pending and len(msgs) <= SYNC_DEDUP_MAX:
            # Nothing in flight and a small batch: the round trip on this thread. Through the dedup
            # thread it costs two more thread wake-ups, each a scheduler delay on a busy machine;
            # a larger batch goes there, so the loop reads and decodes the next one meanwhile.
            t0 = time.perf_counter()
            try:
                seen = check(d.keys, d.partitions, d.offsets, self.dedup_ttl)
            finally:
                self._waited = time.perf_counter() - t0
                self.metrics.loop_seconds["dedup_wait"] += self._waited
            return Batch(d.items, seen)
        return Batch(d.items, self._pool.submit(check, d.keys, d.partitions, d.offsets, self.dedup_ttl))

    def _evaluate(self, batch: Batch) -> None:
        """Apply a prepared batch in offset order: dead letters, duplicates, the engine, outputs."""
        m = self.metrics
        tenant = self.cfg.tenant
        seen = batch.seen or b""
        if isinstance(seen, Future):
            tw = time.perf_counter()
            try:
                seen = seen.result()
            except Exception:  # Redis did not answer: as for lookups below, the batch stays first
                self._pending.appendleft(batch)
                raise
            m.loop_seconds["dedup_wait"] += time.perf_counter() - tw
        t0 = time.perf_counter()
        if self.lookups.active(self.engine.rules):  # the batch's lookup rows: one round trip for misses
            try:
                self.lookups.prefetch(self.engine.rules, [it[3] for it in batch.items if it[3] is not None])
            except Exception:
                # Redis did not answer: the batch stays first in line (close's drain tries it again
                # before any later one), so a checkpoint never covers offsets it skipped
                self._pending.appendleft(batch)
                raise
            m.loop_seconds["lookup_wait"] += time.perf_counter() - t0
            t0 = time.perf_counter()
        positions = self.positions
        parts = self.engine.partitions
        produce = self.outputs.produce
        late_topic = self.topics.late
        traced = self.tracing.current.enabled
        late = dup_redis = dup_engine = evaluated = malformed = 0
        touched: set[int] = set()
        k = 0
        for msg, p, off, d, dev, seq, ts in batch.items:
            if d is None:
                if dev is None:  # another track's key: only the position moves
                    if p in parts:
                        positions[p] = off + 1
                        touched.add(p)
                    continue
                if p in parts:
                    malformed += 1
                    raw, dl_key = dead_letter(msg, dev, int(self.clock() * 1000), pii_policy(self.cfg))
                    produce(self.topics.dead_letter, raw, dl_key, headers=headers(msg, "malformed", dev))
                    positions[p] = off + 1
                    touched.add(p)
                continue
            i = k
            k += 1
            part = parts.get(p)
            if part is None:
                continue  # revoked or lost since the batch was read
            positions[p] = off + 1
            touched.add(p)
            if seen and seen[i] == DUP_FLAG:  # a copy first seen at another offset
                dup_redis += 1
                continue
            ts_type, ingest = msg.timestamp()
            if traced and (hdrs := msg.headers()) and (parent := traceparent_of(hdrs)) is not None:
                self.traced.remember(p, dev, ts, parent, time.time_ns(), off)
            verdict = part.offer(d, dev, seq, ts, ingest if ts_type else None)
            if verdict == 0:
                evaluated += 1
            elif verdict == LATE:
                late += 1
                produce(late_topic, msg.value(), msg.key(), headers=headers(msg, "late"))
            elif verdict == DUPLICATE:
                dup_engine += 1
        self.dirty |= touched
        if malformed:
            m.malformed.inc(malformed)
        if dup_redis:
            m.deduped.labels(tenant, "redis").inc(dup_redis)
        if dup_engine:
            m.deduped.labels(tenant, "engine").inc(dup_engine)
        if late:
            m.late.inc(late)
        m.evaluated.inc(evaluated)
        for p in touched:
            self._emit(parts[p], p)
        self.batches += 1
        took = time.perf_counter() - t0
        m.loop_seconds["evaluate"] += took
        m.batch_seconds.observe(took)
