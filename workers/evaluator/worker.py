"""The evaluator worker: events topic → rule engine → alerts topic, with state checkpointed in Redis.

One loop (confluent-kafka's rebalance callbacks run inside ``consume``, so they land between
batches), plus one thread that runs the batches' Redis dedup round trips in consume order: with a
backlog up to ``dedup_depth`` batches are in flight while the loop evaluates older ones, so the
loop waits on Redis only when Redis is slower than the evaluation.
Per batch: decode (malformed → dead-letter topic), dedup in one Redis round trip, feed the engine
in offset order (late → late topic), produce the alert transitions with an idempotent producer.
Every ``checkpoint_interval``, and on revocation and shutdown: flush the producer (all outputs
acknowledged), write each dirty partition's snapshot with the offset it
covers (and the gap records found since) in one Redis transaction, then commit those offsets.
A checkpoint covers the evaluated batches only; batches still in flight are not waited for: their
dedup keys already name their own ``partition:offset``, so a replay of them after a crash is
evaluated, not skipped (revocation, pause and shutdown do evaluate them first, to replay less).
On assignment: restore the snapshot and seek to its offset. Kafka's committed offset is therefore
never ahead of the state in Redis; a crash replays from the snapshot, and alert ids are
deterministic, so a replay repeats ids and never invents new ones.

Idleness rule: a partition that has had no record for ``idleTimeout`` (wall clock), and whose
position is at the high watermark (no lag, so nothing is in flight), advances its watermark with
the wall clock: watermark = last event time − lateness + time idle. Absence and window timers of
a quiet partition then still fire; while there is lag, or just after an assignment, they wait.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Producer, TopicPartition

from alertpipe.workers.config import (
    GROUPS_STAGE_SUFFIX,
    OFFSET_RESET,
    ConfigSource,
    PipelineConfig,
    alert_filter,
    consumer_group,
    kafka_options,
    key_filter,
    parse_duration,
)
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.evaluator.group_worker import GroupWorker
from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.redis_state import DUPLICATE as DUP_FLAG
from alertpipe.workers.evaluator.redis_state import RedisState, dedup_keys
from alertpipe.workers.events import EventError, ahead_reason, common_shape, decode_event, nesting_reason
from alertpipe.workers.rules import CompiledRule, compile_rule
from alertpipe.workers.rules.engine import DUPLICATE, LATE, Engine, EngineSettings, Partition
from alertpipe.workers.secrets import SecretResolver

__all__ = ["Evaluator", "EvaluatorOptions", "RESTART"]

logger = logging.getLogger(__name__)

RESTART = "restart"  # run() result: connection settings changed, build a new Evaluator
_PARTITION_EOF = getattr(KafkaError, "_PARTITION_EOF", -191)
Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class EvaluatorOptions:
    batch_size: int = 5000
    poll_timeout: float = 0.1
    checkpoint_interval: float = 1.0
    group_id: str | None = None
    instance_id: str | None = None  # static group membership: a restart takes its partitions back at once
    session_timeout_ms: int = 10_000
    dedup: bool = True  # off only where the source is known not to replay (benchmarks)
    dedup_depth: int = 4  # consumed batches whose dedup round trip may be in flight at once
    housekeeping_interval: float = 1.0
    linger_ms: int = 1  # the producer's: alerts waited up to 5 ms for company before (bench/e2e)


@dataclass(slots=True)
class _Batch:
    """A decoded batch: (msg, partition, offset, event | None, deviceId | reason, seq, ts) per record,
    and the dedup answer of its events (a future on the dedup thread: one flag byte per event)."""

    items: list[tuple[Any, int, int, Any, Any, int, int]]
    seen: Future[bytes] | None


def compile_rules(cfg: PipelineConfig, now: datetime | None = None) -> list[CompiledRule]:
    """The enabled rules of a config; one that does not compile is logged and skipped."""
    now = now or datetime.now(UTC)
    disabled = {k.name for k in cfg.kill_switches.disabled_rules if k.active(now)}
    out = []
    for entry in cfg.rules:
        if entry.name in disabled:
            continue
        try:
            out.append(compile_rule(entry.name, entry.spec))
        except RuleCompileError as exc:
            logger.error("rule %s does not compile, skipped: %s", entry.name, exc)
    return out


def engine_settings(cfg: PipelineConfig) -> EngineSettings:
    # a device's reorder state lives as long as its dedup keys: past that a replay is new anyway
    return EngineSettings(cfg.tenant, cfg.pipeline, round(parse_duration(cfg.allowed_lateness) * 1000),
                          cfg.revision, device_ttl_ms=round(parse_duration(cfg.dedup_ttl) * 1000),
                          repartition=cfg.kafka.topics.repartition is not None)


def _connection(cfg: PipelineConfig) -> tuple[Any, ...]:
    # the track's group and start position, not its ranges: a step changes ranges in place
    track = (cfg.track.consumer_group, cfg.track.start_at) if cfg.track else (None, "earliest")
    return (cfg.kafka.bootstrap_servers, cfg.kafka.topics, tuple(sorted(cfg.kafka.client_options.items())),
            cfg.kafka.credentials_secret_ref, cfg.redis, track)


class Evaluator:
    """Runs one pipeline's evaluation until ``stop`` is set (or its connection settings change)."""

    def __init__(
        self,
        source: ConfigSource,
        *,
        options: EvaluatorOptions | None = None,
        secrets: SecretResolver | None = None,
        metrics: EvaluatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = source.current()
        if cfg is None:
            raise ValueError("no config revision loaded yet")
        self.source = source
        self.cfg = cfg
        self.opts = options or EvaluatorOptions()
        self.secrets = secrets or SecretResolver()
        self.clock = clock
        self.metrics = metrics or EvaluatorMetrics(cfg.tenant)
        self.metrics.set_revision(cfg.revision)
        self.topics = cfg.kafka.topics
        self.engine = Engine(engine_settings(cfg), compile_rules(cfg), clock=clock)
        self.metrics.rules.set(len(self.engine.rules))
        self.redis = self._redis(cfg)
        self.state = RedisState(self.redis, cfg.redis.key_prefix, self.topics.events)
        self.dedup_ttl = int(parse_duration(cfg.dedup_ttl))
        self.idle_ms = round(parse_duration(cfg.idle_timeout) * 1000)
        self.positions: dict[int, int] = {}  # next offset to process, per assigned partition
        self.dirty: set[int] = set()
        self.pending_gaps: dict[int, list[dict[str, Any]]] = {}
        self.last_record: dict[int, float] = {}  # wall clock of the last record per partition
        self.assigned: set[int] = set()
        self.paused = False
        self.delivery_errors: list[str] = []
        self.producer = Producer(self._kafka_options(producer=True))
        self.consumer = Consumer(self._kafka_options(producer=False))
        self._last_checkpoint = clock()
        # Snapshots are whole partitions: with many group keys one takes long, so the interval
        # stretches to keep checkpointing under ~10 % of the time (replays grow accordingly).
        self._checkpoint_every = self.opts.checkpoint_interval
        self._last_housekeeping = 0.0
        self.batches = 0
        # one thread: the dedup scripts run in consume order (a copy is a duplicate of the earlier one)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="evaluator-dedup")
        self.groups = self._group_worker(cfg) if self.topics.repartition else None
        self._pending: deque[_Batch] = deque()
        # a canary track's share of the keys (None: all); checked on the Kafka key, before decoding
        self.track_keys = key_filter(cfg.track)
        self.track_alerts = alert_filter(cfg.track)

    # --- clients ---------------------------------------------------------------------------------

    def _kafka_options(self, *, producer: bool) -> dict[str, Any]:
        k = self.cfg.kafka
        ref = k.credentials_secret_ref
        opts = kafka_options(k, self.secrets.key_of(ref.name) if ref is not None else None)
        if producer:
            opts.update({"linger.ms": self.opts.linger_ms, "compression.type": "lz4",
                         "client.id": "alertpipe-evaluator",
                         "enable.idempotence": True, "acks": "all"})
        else:
            track = self.cfg.track
            group = (self.opts.group_id or (track.consumer_group if track else None)
                     or consumer_group(self.cfg.tenant, self.cfg.pipeline, "evaluator"))
            opts.update({
                "group.id": group,
                "client.id": "alertpipe-evaluator",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": track.start_at if track else OFFSET_RESET,
                "partition.assignment.strategy": "range",
                "session.timeout.ms": self.opts.session_timeout_ms,
                "fetch.max.bytes": 52_428_800,
                "queued.min.messages": 200_000,
            })
            if self.opts.instance_id:
                opts["group.instance.id"] = self.opts.instance_id
        return opts

    def _group_worker(self, cfg: PipelineConfig) -> GroupWorker:
        """Stage 2 (rules whose groups span devices): a second consumer on the repartition topic."""
        opts = self._kafka_options(producer=False)
        opts["group.id"] += GROUPS_STAGE_SUFFIX
        if "group.instance.id" in opts:
            opts["group.instance.id"] += GROUPS_STAGE_SUFFIX
        return GroupWorker(
            topic=str(self.topics.repartition), events_topic=self.topics.events, late_topic=self.topics.late,
            alerts_topic=self.topics.alerts, consumer_options=opts, producer=self.producer,
            redis_client=self.redis, key_prefix=cfg.redis.key_prefix, settings=self.engine.settings,
            rules=self.engine.rules.values(), metrics=self.metrics, batch_size=self.opts.batch_size,
            checkpoint_interval=self.opts.checkpoint_interval, clock=self.clock)

    def _redis(self, cfg: PipelineConfig) -> redis.Redis:
        url = cfg.redis.url
        if url is None and cfg.redis.url_secret_ref is not None:
            url = self.secrets.resolve(cfg.redis.url_secret_ref).get_secret_value()
        if url is None:
            raise ValueError("redis.url or redis.urlSecretRef is required")
        return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                    health_check_interval=30)

    # --- rebalance -------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        now = self.clock()
        for tp in partitions:
            p = tp.partition
            part = self.engine.partition(p)
            chain = self.state.load_chain(p)
            if chain is not None:
                meta = part.restore(*chain)
                tp.offset = int(meta["offset"])
                self.positions[p] = tp.offset
                if part.ctx.out:  # rules changed while no process ran: their episodes resolve
                    self._emit(part, p)
                # dirty: the checkpoint may be ahead of the committed offset (a crash between the two);
                # a partition with nothing more to read would otherwise never commit it
                self.dirty.add(p)
                logger.info("partition %d: restored checkpoint, seeking to offset %d", p, tp.offset)
            else:
                tp.offset = OFFSET_INVALID  # committed offset, else auto.offset.reset
            self.assigned.add(p)
            self.last_record[p] = now
        consumer.assign(partitions)
        self.metrics.assigned.set(len(self.assigned))
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
        logger.warning("partitions %s lost without revocation: dropping state (the new owner restores)", ps)
        self._forget(ps)

    def _forget(self, ps: list[int]) -> None:
        for p in ps:
            self.engine.drop(p)
            self.positions.pop(p, None)
            self.dirty.discard(p)
            self.pending_gaps.pop(p, None)
            self.assigned.discard(p)
            if self.groups is not None:
                self.groups.forget_upstream(p)
            self.metrics.assigned.set(len(self.assigned))
            for gauge in (self.metrics.lag, self.metrics.watermark_delay, self.metrics.checkpoint_bytes):
                try:
                    gauge.remove(str(p))
                except KeyError:
                    pass

    # --- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> str | None:
        self.consumer.subscribe([self.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        logger.info("evaluator: %d rule(s), revision %s, topic %s", len(self.engine.rules),
                    self.cfg.revision, self.topics.events)
        if self.groups is not None:
            self.groups.start()
        result: str | None = None
        pending = self._pending
        depth = max(1, self.opts.dedup_depth)
        full = self.opts.batch_size
        loop = self.metrics.loop_seconds
        perf = time.perf_counter
        try:
            while not stop.is_set():
                if self._reload() == RESTART:
                    result = RESTART
                    break
                t0 = perf()
                # with batches in flight, do not sit in consume: their answers may be ready
                msgs = self.consumer.consume(full, 0 if pending else self.opts.poll_timeout)
                t1 = perf()
                loop["consume"] += t1 - t0
                if msgs:
                    pending.append(self._prepare(msgs))
                    loop["decode"] += perf() - t1
                # With a backlog (full batches) up to `depth` batches' dedup round trips run on the
                # dedup thread while older batches are evaluated here; without one, at once.
                backlog = len(msgs) >= full
                while pending and (
                    not backlog or len(pending) > depth or pending[0].seen is None or pending[0].seen.done()
                ):
                    self._evaluate(pending.popleft())
                if self.groups is not None:
                    self.groups.step(self.clock())
                self.producer.poll(0)
                now = self.clock()
                if now - self._last_housekeeping >= self.opts.housekeeping_interval:
                    t2 = perf()
                    self._housekeeping(now)
                    loop["housekeeping"] += perf() - t2
                if self.dirty and now - self._last_checkpoint >= self._checkpoint_every:
                    self.checkpoint(sorted(self.dirty))
        finally:
            self.close()
        return result

    def close(self) -> None:
        try:
            self._drain()
            self.checkpoint(sorted(self.assigned))
        except Exception:  # noqa: BLE001 - shutting down: the next owner replays from the last checkpoint
            logger.exception("final checkpoint failed; the next owner replays from the previous one")
        self.consumer.close()
        if self.groups is not None:
            self.groups.close()
        self.producer.flush(10)
        self._pool.shutdown(wait=True)

    def process(self, msgs: list[Any]) -> None:
        """One consumed batch: decode, dedup (one Redis round trip), evaluate, produce."""
        self._evaluate(self._prepare(msgs))

    def _prepare(self, msgs: list[Any]) -> _Batch:
        """Decode and start the batch's dedup round trip (on the dedup thread); no state changes."""
        tenant = self.cfg.tenant
        dedup = self.opts.dedup
        key_of = dedup_keys(self.cfg.redis.key_prefix, tenant)
        items: list[tuple[Any, int, int, Any, Any, int, int]] = []
        keys: list[bytes] = []
        ps: list[int] = []
        offs: list[int] = []
        loads = orjson.loads
        owns = self.track_keys
        skipped = 0
        now_ms = int(self.clock() * 1000)
        skew_ms = round(parse_duration(self.cfg.ingest.max_future_skew) * 1000)
        ts_limit = now_ms + skew_ms
        for msg in msgs:
            if msg.error() is not None:
                err = msg.error()
                if err.code() != _PARTITION_EOF:
                    logger.warning("consume error: %s", err)
                continue
            p = msg.partition()
            off = msg.offset()
            if owns is not None:
                key = msg.key()
                if key is not None and not owns(key):
                    items.append((msg, p, off, None, None, 0, -1))  # another track's key
                    skipped += 1
                    continue
            raw = msg.value()
            deep = nesting_reason(raw) if raw else None
            if deep is not None:  # decodes, but could never be checkpointed: dead-letter it
                items.append((msg, p, off, None, deep, 0, -1))
                continue
            fast = _fast_decode(loads, raw, tenant)
            if fast is None:
                try:
                    ev = decode_event(msg.value() or b"", tenant)
                except EventError as exc:
                    items.append((msg, p, off, None, str(exc), 0, -1))  # malformed: dead-letter it
                    continue
                fast = (ev.data, ev.device_id, ev.seq, ev.ts_ms)
            d, dev, seq, ts = fast
            if ts > ts_limit:  # would move the watermark ahead (ingest.maxFutureSkew): dead-letter it
                items.append((msg, p, off, None, ahead_reason(ts, now_ms, skew_ms, "evaluator"), 0, -1))
                continue
            if owns is not None and msg.key() is None and not owns(dev):  # unkeyed: judged by deviceId
                items.append((msg, p, off, None, None, 0, -1))
                skipped += 1
                continue
            items.append((msg, p, off, d, dev, seq, ts))
            if dedup:
                keys.append(key_of(dev, seq))
                ps.append(p)
                offs.append(off)
        now = self.clock()
        last = self.last_record
        for p in {item[1] for item in items}:
            last[p] = now
        self.metrics.consumed.inc(len(msgs))
        if skipped:
            self.metrics.skipped.inc(skipped)
        seen: Future[bytes] | None = None
        if keys:
            seen = self._pool.submit(self.state.check, keys, ps, offs, self.dedup_ttl)
        return _Batch(items, seen)

    def _evaluate(self, batch: _Batch) -> None:
        """Apply a prepared batch in offset order: dead letters, duplicates, the engine, outputs."""
        m = self.metrics
        tenant = self.cfg.tenant
        seen = b""
        if batch.seen is not None:
            tw = time.perf_counter()
            seen = batch.seen.result()
            m.loop_seconds["dedup_wait"] += time.perf_counter() - tw
        t0 = time.perf_counter()
        positions = self.positions
        parts = self.engine.partitions
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
                    self._dead_letter(msg, dev)
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
            verdict = part.offer(d, dev, seq, ts, ingest if ts_type else None)
            if verdict == 0:
                evaluated += 1
            elif verdict == LATE:
                late += 1
                self.producer.produce(self.topics.late, msg.value(), msg.key(),
                                      headers=self._headers(msg, "late"), on_delivery=self._on_delivery)
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

    def _drain(self) -> None:
        """Evaluate the batches whose dedup round trips are in flight (before a revoke, pause, stop)."""
        pending = self._pending
        while pending:
            self._evaluate(pending.popleft())

    def _emit(self, part: Partition, p: int) -> None:
        alerts = part.take_alerts()
        if alerts and self.track_alerts is not None:
            publishes = self.track_alerts
            kept = [a for a in alerts if publishes(a)]
            if len(kept) < len(alerts):
                self.metrics.suppressed.inc(len(alerts) - len(kept))
            alerts = kept
        if alerts:
            now_ms = int(self.clock() * 1000)
            m = self.metrics
            for a in alerts:
                self.producer.produce(self.topics.alerts, orjson.dumps(a), a["id"].encode(),
                                      on_delivery=self._on_delivery)
                m.alerts.labels(self.cfg.tenant, a["rule"], a["status"]).inc()
                by_event = m.event_to_alert.labels("event_time")
                by_event.observe(max(0.0, (now_ms - a["eventTimeMs"]) / 1000))
                if a.get("ingestTimeMs"):
                    by_ingest = m.event_to_alert.labels("ingest_time")
                    by_ingest.observe(max(0.0, (now_ms - a["ingestTimeMs"]) / 1000))
        if self.groups is not None:
            forwarded = part.take_forwarded()
            if forwarded:
                self.groups.forward(p, forwarded, self._on_delivery)
        gaps = part.take_gaps()
        if gaps:
            self.pending_gaps.setdefault(p, []).extend(gaps)
            self.metrics.gaps.inc(len(gaps))
            self.metrics.gap_events.inc(sum(g["missing"] for g in gaps))

    def _headers(self, msg: Any, kind: str, reason: str | None = None) -> Headers:
        h: Headers = [
            ("alertpipe-kind", kind.encode()),
            ("alertpipe-source-topic", msg.topic().encode()),
            ("alertpipe-source-partition", str(msg.partition()).encode()),
            ("alertpipe-source-offset", str(msg.offset()).encode()),
        ]
        if reason is not None:
            h.append(("alertpipe-reason", reason.encode()[:1024]))
        return h

    def _dead_letter(self, msg: Any, reason: str) -> None:
        envelope = {
            "kind": "malformed-event",
            "stage": "evaluator",
            "reason": reason,
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": (msg.key() or b"").decode("utf-8", "replace")[:1024],
            **_dead_letter_value(msg.value() or b""),
            "at": int(self.clock() * 1000),
        }
        self.producer.produce(self.topics.dead_letter, orjson.dumps(envelope), msg.key(),
                              headers=self._headers(msg, "malformed", reason), on_delivery=self._on_delivery)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(str(err))

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self, partitions: list[int]) -> None:
        """Outputs acknowledged → snapshots + gap records in Redis → offsets committed."""
        parts = self.engine.partitions
        ps = [p for p in partitions if p in self.dirty and p in self.positions and p in parts]
        self._last_checkpoint = self.clock()
        if not ps:
            return
        t0 = time.perf_counter()
        left = self.producer.flush(30)
        if left or self.delivery_errors:
            errs = self.delivery_errors[:3]
            self.delivery_errors.clear()
            # Not acknowledged: do not move the checkpoint; a restart replays from the previous one.
            raise RuntimeError(f"{left} output(s) not acknowledged ({'; '.join(errs) or 'timeout'});"
                               " not checkpointing")
        blobs = []
        gaps: list[dict[str, Any]] = []
        for p in ps:
            # a delta of what changed since the last checkpoint, or a full snapshot (engine.checkpoint)
            full, blob = parts[p].checkpoint(offset=self.positions[p])
            blobs.append((p, full, blob))
            self.metrics.checkpoint_bytes.labels(str(p)).set(len(blob))
            self.metrics.checkpoints.labels("full" if full else "delta").inc()
            gaps.extend(self.pending_gaps.pop(p, []))
        self.state.save_chain(blobs, gaps)
        for p in ps:
            parts[p].saved()
        offsets = [TopicPartition(self.topics.events, p, self.positions[p]) for p in ps]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - the Redis checkpoint is the source of truth
            logger.warning("offset commit failed (the checkpoint in Redis stands): %s", exc)
        self.dirty.difference_update(ps)
        took = time.perf_counter() - t0
        self.metrics.loop_seconds["checkpoint"] += took
        self._checkpoint_every = max(self.opts.checkpoint_interval, min(60.0, 10 * took))
        self.metrics.checkpoint_seconds.observe(took)

    # --- config, kill switches, idleness -----------------------------------------------------------

    def _reload(self) -> str | None:
        cfg = self.source.current()
        now_dt = datetime.now(UTC)
        if cfg is not None and cfg.revision != self.cfg.revision:
            if _connection(cfg) != _connection(self.cfg):
                logger.warning("config %s changes Kafka/Redis settings: restarting the evaluator",
                               cfg.revision)
                self.cfg = cfg
                return RESTART
            self._apply(cfg, now_dt)
        elif self._disabled_set(self.cfg, now_dt) != self._disabled_now:
            self._apply(self.cfg, now_dt)  # a disable switch expired or began
        stop_switch = self.cfg.kill_switches.stop_evaluation
        want_pause = stop_switch is not None and stop_switch.active(now_dt)
        if want_pause != self.paused:
            self._set_paused(want_pause)
        return None

    _disabled_now: frozenset[str] = frozenset()

    @staticmethod
    def _disabled_set(cfg: PipelineConfig, now: datetime) -> frozenset[str]:
        return frozenset(k.name for k in cfg.kill_switches.disabled_rules if k.active(now))

    def _apply(self, cfg: PipelineConfig, now: datetime) -> None:
        rules = compile_rules(cfg, now)
        self.engine.set_rules(rules, engine_settings(cfg))
        self._disabled_now = self._disabled_set(cfg, now)
        self.cfg = cfg
        self.track_keys = key_filter(cfg.track)
        self.track_alerts = alert_filter(cfg.track)
        self.idle_ms = round(parse_duration(cfg.idle_timeout) * 1000)
        self.dedup_ttl = int(parse_duration(cfg.dedup_ttl))
        self.metrics.set_revision(cfg.revision)
        self.metrics.rules.set(len(rules))
        for p, part in self.engine.partitions.items():
            self._emit(part, p)  # resolutions of retired rules
            self.dirty.add(p)
        if self.groups is not None:
            self.groups.set_rules(rules, self.engine.settings)
        logger.info("config revision %s live: %d rule(s)", cfg.revision, len(rules))

    def _set_paused(self, pause: bool) -> None:
        assignment = self.consumer.assignment()
        if pause:
            self._drain()
            self.checkpoint(sorted(self.assigned))
            if assignment:
                self.consumer.pause(assignment)
            logger.warning("stopEvaluation kill switch on: consumption paused (lag grows, nothing is lost)")
        else:
            if assignment:
                self.consumer.resume(assignment)
            logger.warning("stopEvaluation kill switch off: consumption resumed")
        if self.groups is not None:
            self.groups.set_paused(pause)
        self.paused = pause
        self.metrics.paused.set(1 if pause else 0)

    def _housekeeping(self, now: float) -> None:
        self._last_housekeeping = now
        m = self.metrics
        held = groups = 0
        for p in list(self.assigned):
            part = self.engine.partitions.get(p)
            if part is None:
                continue
            held += part.held_count  # not len(part.held): it keeps entries released early
            groups += part.group_count()
            if part.wm > 0:
                m.watermark_delay.labels(str(p)).set(max(0.0, now - part.wm / 1000))
            lag = self._lag(p)
            if lag is not None:
                m.lag.labels(str(p)).set(lag)
            idle_for = (now - self.last_record.get(p, now)) * 1000
            if not self.paused and lag == 0 and idle_for >= self.idle_ms and part.max_ts > 0:
                target = part.max_ts - part.lateness + int(idle_for)
                if target > part.wm:
                    part.advance_to(target)
                    self._emit(part, p)
                    self.dirty.add(p)
        if self.groups is not None:
            g = self.groups
            parts = {p: self.engine.partitions[p] for p in self.assigned if p in self.engine.partitions}
            if not self.paused:
                g.send_watermarks(parts, self._lag, lambda p: (now - self.last_record.get(p, now)) * 1000,
                                  self.idle_ms, now, self._on_delivery)
            g.housekeeping(now)
            groups += g.group_count()
        m.held.set(held)
        m.groups.set(groups)

    def _lag(self, p: int) -> int | None:
        """High watermark (as of the last fetch: no broker round trip) minus the next offset."""
        try:
            tp = TopicPartition(self.topics.events, p)
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
        except Exception:  # noqa: BLE001 - a metric; nothing fetched yet
            return None
        pos = self.positions.get(p)
        if pos is None and low is not None and low >= 0:
            pos = low  # nothing read yet: an empty partition has no lag (a repartition idle mark needs it)
        if pos is None or high is None or high < 0:
            return None
        return max(0, int(high) - int(pos))


def _fast_decode(
    loads: Callable[[Any], Any], raw: bytes | None, tenant: str
) -> tuple[dict[str, Any], str, int, int] | None:
    """The common case of decode_event (``common_shape``), without building an Event; None sends
    the record through decode_event, which accepts the rest or names the reason."""
    try:
        obj = loads(raw)
    except orjson.JSONDecodeError:
        return None
    shape = common_shape(obj, tenant)
    if shape is None:
        return None
    return obj, shape[0], shape[1], shape[2]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


DEAD_LETTER_VALUE_BYTES = 256 * 1024  # base64 makes 4/3 of it: the record stays under Kafka's 1 MB


def _dead_letter_value(raw: bytes) -> dict[str, Any]:
    """The record's value for its dead-letter envelope: whole, or its head when a whole copy
    would not fit in one Kafka record (the source topic and offset point at the rest)."""
    if len(raw) <= DEAD_LETTER_VALUE_BYTES:
        return {"valueBase64": _b64(raw)}
    return {"valueBase64": _b64(raw[:DEAD_LETTER_VALUE_BYTES]), "valueBytes": len(raw), "truncated": True}
