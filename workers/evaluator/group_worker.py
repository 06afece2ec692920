"""Stage 2 of the evaluator: rules whose groups span devices, per repartition partition.

Runs inside the evaluator process, on the evaluator's loop, with a second consumer (group
``<evaluator group>-groups``) on the repartition topic and the evaluator's producer, Redis client
and metrics. It also holds stage 1's side of the topic: ``forward`` (event records, keyed by
rule and group key) and ``send_watermarks`` (each events partition's watermark to every
repartition partition).

Checkpoints are stage 1's (``stage.CheckpointedStage``): outputs acknowledged → snapshots in
Redis (``prefix:evaluator:ckpt:<repartition topic>:<partition>``) → offsets committed, off the
loop but for the cut; on assignment restore and seek. Stage 1 commits its events offsets only
after the forwarded records are acknowledged, so a crash replays forwarded records, and
``GroupStage`` skips the copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.records import is_fatal
from alertpipe.workers.evaluator.redis_state import RedisState
from alertpipe.workers.evaluator.repartition import (
    ForwardedEvent,
    RecordError,
    Router,
    WatermarkSender,
    decode_record,
    encode_event,
    encode_watermark,
    project,
    stage1_watermark,
)
from alertpipe.workers.evaluator.stage import CheckpointedStage, Headers, Outputs
from alertpipe.workers.rules import CompiledRule
from alertpipe.workers.rules.engine import EngineSettings, Partition
from alertpipe.workers.rules.groups import ACCEPTED, DUPLICATE, LATE, GroupStage

__all__ = ["GroupWorker"]

logger = logging.getLogger(__name__)

_PARTITION_EOF = getattr(KafkaError, "_PARTITION_EOF", -191)


def _partition_count(client: Any, topic: str, wait: float = 0.0) -> int:
    """Partitions of a topic; waits up to ``wait`` seconds for it to appear (the operator creates
    topics while the workers start)."""
    deadline = time.monotonic() + wait
    while True:
        md = client.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return len(t.partitions)
        if time.monotonic() >= deadline:
            raise ValueError(f"topic {topic!r} does not exist or has no partitions"
                             f" ({t.error if t is not None else 'unknown topic'}); the operator creates it"
                             " (kafka.topics.repartition / kafka.topics.events)")
        time.sleep(1.0)


class GroupWorker(CheckpointedStage):
    label = "group partition"

    def __init__(
        self,
        *,
        topic: str,
        events_topic: str,
        late_topic: str,
        alerts_topic: str,
        consumer: Consumer,
        outputs: Outputs,
        writer: ThreadPoolExecutor,
        redis_client: redis.Redis,
        key_prefix: str,
        settings: EngineSettings,
        rules: Iterable[CompiledRule],
        metrics: EvaluatorMetrics,
        batch_size: int,
        checkpoint_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(topic, consumer, outputs, writer, clock)
        self.events_topic = events_topic
        self.late_topic = late_topic
        self.alerts_topic = alerts_topic
        self.settings = settings
        self.rules = [r for r in rules if r.spans_devices]
        self.metrics = metrics
        self.batch_size = batch_size
        self.checkpoint_interval = checkpoint_interval
        self.state = RedisState(redis_client, key_prefix, topic)
        # metadata through the consumer: it never auto-creates a missing topic (a producer may)
        self.partitions = _partition_count(self.consumer, topic, wait=120)
        self.upstreams = _partition_count(self.consumer, events_topic, wait=120)
        self.router = Router(self.partitions)
        self.stages: dict[int, GroupStage] = {}
        self.fatal: Any = None  # a fatal consumer error: the evaluator starts a new GroupWorker
        self.sender = WatermarkSender()
        self._last_metadata = clock()

    # --- stage 1 side --------------------------------------------------------------------------

    def forward(self, upstream: int,
                items: list[tuple[CompiledRule, Any, int, int | None, dict[str, Any]]]) -> None:
        """Event records of one events partition (before its next watermark record)."""
        produce = self.outputs.produce
        router = self.router
        for rule, key, ts, ingest, d in items:
            partition, k = router(rule, key)
            body = project(router.keep(rule), d)
            produce(self.topic, encode_event(upstream, rule.name, rule.fingerprint, ts, ingest, body), k,
                    partition=partition)
        self.metrics.forwarded.inc(len(items))

    def send_watermarks(self, parts: Mapping[int, Partition], lag: Callable[[int], int | None],
                        idle_for_ms: Callable[[int], float], idle_ms: int, now: float) -> None:
        """Each events partition's watermark to every repartition partition, when it changed (or as
        a heartbeat). Called after the partitions' outputs were produced, so a watermark record
        always follows the event records it covers."""
        for p, part in parts.items():
            send, wm = stage1_watermark(part.wm, part.max_ts > 0, lag(p), idle_for_ms(p), idle_ms)
            if send and self.sender.due(p, wm, now):
                raw = encode_watermark(p, wm)
                for r in range(self.partitions):
                    self.outputs.produce(self.topic, raw, None, partition=r)

    def forget_upstream(self, p: int) -> None:
        self.sender.forget(p)

    # --- stage 2: rebalance --------------------------------------------------------------------

    def start(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _stage(self, r: int) -> GroupStage:
        return GroupStage(self.settings, self.rules, upstreams=self.upstreams, partition=r, clock=self.clock)

    # --- the stage's state (CheckpointedStage) -----------------------------------------------------

    def _holder(self, r: int) -> GroupStage | None:
        return self.stages.get(r)

    def _restore(self, r: int) -> int | None:
        stage = self.stages[r] = self._stage(r)
        blob = self.state.load(r)
        if blob is None:
            return None
        meta = stage.restore(blob)
        stage.set_upstreams(self.upstreams)
        if stage.ctx.out:
            self._emit(stage)
        return int(meta["offset"])

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self.metrics.group_assigned.set(len(self.stages))

    def _drop(self, rs: Any) -> None:
        for r in rs:
            self.stages.pop(r, None)
            try:
                self.metrics.group_watermark_delay.remove(str(r))
            except KeyError:
                pass
        self.metrics.group_assigned.set(len(self.stages))

    def _take(self, r: int) -> tuple[bool, bytes, list[dict[str, Any]]]:
        return True, self.stages[r].snapshot(offset=self.positions[r]), []

    def _write(self, blobs: list[tuple[int, bool, bytes]], gaps: list[dict[str, Any]]) -> None:
        self.state.save([(r, blob) for r, _full, blob in blobs])

    def _saved(self, r: int) -> None:
        pass  # every snapshot of a group stage is a full one

    # --- stage 2: the batch ----------------------------------------------------------------------

    def step(self, now: float) -> None:
        """Read what is there (no wait: the evaluator's loop waits on the events topic), move the
        checkpoint in flight on, begin one when due."""
        msgs = self.consumer.consume(self.batch_size, 0)
        if msgs:
            self.process(msgs)
        self.advance()
        if self.checkpoint_due(now, self.checkpoint_interval):
            self.begin_checkpoint(sorted(self.dirty), spread=True)
            self.advance()

    def process(self, msgs: list[Any]) -> None:
        stages = self.stages
        touched: set[int] = set()
        counts = {ACCEPTED: 0, DUPLICATE: 0, LATE: 0, 3: 0}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if is_fatal(err):
                    self.fatal = err  # the evaluator starts anew (see Evaluator.fatal)
                elif err.code() != _PARTITION_EOF:
                    logger.warning("repartition consume error: %s", err)
                continue
            r = msg.partition()
            stage = stages.get(r)
            if stage is None:
                continue
            self.positions[r] = msg.offset() + 1
            touched.add(r)
            try:
                rec = decode_record(msg.value())
            except RecordError as exc:
                logger.warning("repartition %d@%d skipped: %s", r, msg.offset(), exc)
                continue
            if isinstance(rec, ForwardedEvent):
                verdict = stage.offer(rec.rule, rec.fingerprint, rec.event, rec.ts, rec.ingest)
                counts[verdict] += 1
                if verdict == LATE:
                    self._late(msg, rec)
            else:
                stage.watermark(rec.upstream, rec.wm)
        self.dirty |= touched
        m = self.metrics.group_events
        for verdict, name in ((ACCEPTED, "accepted"), (DUPLICATE, "duplicate"), (LATE, "late"), (3, "stale")):
            if counts[verdict]:
                m.labels(self.settings.tenant, name).inc(counts[verdict])
        for r in touched:
            self._emit(stages[r])

    def _late(self, msg: Any, rec: ForwardedEvent) -> None:
        headers: Headers = [
            ("alertpipe-kind", b"late"), ("alertpipe-stage", b"groups"),
            ("alertpipe-rule", rec.rule.encode()),
            ("alertpipe-source-topic", msg.topic().encode()),
            ("alertpipe-source-partition", str(msg.partition()).encode()),
            ("alertpipe-source-offset", str(msg.offset()).encode()),
        ]
        self.outputs.produce(self.late_topic, orjson.dumps(rec.event), rec.event["deviceId"].encode(),
                             headers=headers)

    def _emit(self, stage: GroupStage) -> None:
        alerts = stage.take_alerts()
        if not alerts:
            return
        now_ms = int(self.clock() * 1000)
        m = self.metrics
        for a in alerts:
            self.outputs.produce(self.alerts_topic, orjson.dumps(a), a["id"].encode())
            m.alerts.labels(self.settings.tenant, a["rule"], a["status"]).inc()
            m.event_to_alert.labels("event_time").observe(max(0.0, (now_ms - a["eventTimeMs"]) / 1000))

    # --- rules, pause -------------------------------------------------------------------------------

    def set_rules(self, rules: Iterable[CompiledRule], settings: EngineSettings) -> None:
        self.settings = settings
        self.rules = [r for r in rules if r.spans_devices]
        for r, stage in self.stages.items():
            stage.set_rules(self.rules, settings)
            self._emit(stage)
            self.dirty.add(r)

    def set_paused(self, pause: bool) -> None:
        assignment = self.consumer.assignment()
        if pause:
            self.checkpoint(sorted(self.stages))
            if assignment:
                self.consumer.pause(assignment)
        elif assignment:
            self.consumer.resume(assignment)
        self.paused = pause

    def housekeeping(self, now: float) -> None:
        if now - self._last_metadata >= 60:
            self._last_metadata = now
            try:
                self.upstreams = max(self.upstreams, _partition_count(self.consumer, self.events_topic))
            except Exception as exc:  # noqa: BLE001 - metadata refresh; the old count stands
                logger.warning("events topic metadata: %s", exc)
        for r, stage in self.stages.items():
            wm = stage.wm
            stage.set_upstreams(self.upstreams)
            if stage.wm != wm:
                self.dirty.add(r)
            self._emit(stage)
            if stage.wm > 0:
                self.metrics.group_watermark_delay.labels(str(r)).set(max(0.0, now - stage.wm / 1000))

    def group_count(self) -> int:
        return sum(s.group_count() for s in self.stages.values())

    def close(self) -> None:
        try:
            self.checkpoint(sorted(self.stages))
        except Exception:  # noqa: BLE001 - shutting down: the next owner replays from the last checkpoint
            logger.exception("final group checkpoint failed; the next owner replays from the previous one")
        self.consumer.close()
