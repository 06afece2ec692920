"""The evaluator's control side, beside its data path (worker.py): config revisions swapped in
live, the kill switches (stopEvaluation, disabledRules), and every ``housekeeping_interval`` the
idleness rule and the gauges (lag, watermark delay, held events, groups).

Idleness rule: a partition that has had no record for ``idleTimeout`` (wall clock), and whose
position is at the high watermark (no lag, so nothing is in flight), advances its watermark with
the wall clock: watermark = last event time − lateness + time idle. Absence and window timers of
a quiet partition then still fire; while there is lag, or just after an assignment, they wait.

A mixin of ``Evaluator``: it reads and sets the worker's state declared below.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition

from alertpipe.workers.config import ConfigSource, PipelineConfig, alert_filter, key_filter, parse_duration
from alertpipe.workers.evaluator.links import LinkHealth
from alertpipe.workers.evaluator.lookups import LookupCache
from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.settings import compile_rules, connection, engine_settings
from alertpipe.workers.rules.engine import Engine, Partition

if TYPE_CHECKING:
    from alertpipe.workers.config.models import Topics
    from alertpipe.workers.evaluator.group_worker import GroupWorker
    from alertpipe.workers.tracing import TracingHolder

__all__ = ["RESTART", "Control"]

logger = logging.getLogger(__name__)

RESTART = "restart"  # run() result: connection settings changed, build a new Evaluator


class Control:
    source: ConfigSource
    cfg: PipelineConfig
    engine: Engine
    lookups: LookupCache
    metrics: EvaluatorMetrics
    consumer: Consumer
    topics: Topics
    groups: GroupWorker | None
    track_keys: Any
    track_alerts: Any
    idle_ms: int
    links: LinkHealth
    dedup_ttl: int
    dirty: set[int]
    positions: dict[int, int]
    assigned: set[int]
    last_record: dict[int, float]
    paused: bool
    tracing: TracingHolder
    _last_housekeeping: float

    def _emit(self, part: Partition, p: int) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        raise NotImplementedError

    def checkpoint(self, partitions: Any) -> None:
        raise NotImplementedError

    # --- config, kill switches, idleness -----------------------------------------------------------

    def _reload(self) -> str | None:
        """Swap in a new revision (RESTART when it changes clients), follow the kill switches."""
        cfg = self.source.current()
        now_dt = datetime.now(UTC)
        if cfg is not None and cfg.revision != self.cfg.revision:
            if connection(cfg) != connection(self.cfg):
                logger.warning("config %s changes Kafka/Redis settings: restarting the evaluator",
                               cfg.revision)
                self.cfg = cfg
                return RESTART
            self._apply(cfg, now_dt)
        elif self._disabled_set(self.cfg, now_dt) != self._disabled_now:
            self._apply(self.cfg, now_dt)  # a disable switch expired or began
        if self.tracing.waiting:  # its headers Secret could not be read yet
            self.tracing.update(self.cfg.tracing, self.cfg.tenant, self.cfg.pipeline)
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
        self.lookups.configure(parse_duration(cfg.lookups.ttl), cfg.lookups.max_entries)
        if self.lookups.active(self.engine.rules):  # a new rule may read rows for waiting events
            for part in self.engine.partitions.values():
                self.lookups.prefetch(self.engine.rules, part.held_events())
        self._disabled_now = self._disabled_set(cfg, now)
        self.cfg = cfg
        self.track_keys = key_filter(cfg.track)
        self.track_alerts = alert_filter(cfg.track)
        self.idle_ms = round(parse_duration(cfg.idle_timeout) * 1000)
        self.dedup_ttl = int(parse_duration(cfg.dedup_ttl))
        self.metrics.set_revision(cfg.revision)
        self.metrics.rules.set(len(rules))
        self.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
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
            if not self.paused and self._caught_up(p) == 0 and idle_for >= self.idle_ms and part.max_ts > 0:
                target = part.max_ts - part.lateness + int(idle_for)
                if target > part.wm:
                    part.advance_to(target)
                    self._emit(part, p)
                    self.dirty.add(p)
        if self.groups is not None:
            g = self.groups
            parts = {p: self.engine.partitions[p] for p in self.assigned if p in self.engine.partitions}
            if not self.paused:
                idle_for_ms = lambda p: (now - self.last_record.get(p, now)) * 1000  # noqa: E731
                g.send_watermarks(parts, self._caught_up, idle_for_ms, self.idle_ms, now)
            g.housekeeping(now)
            groups += g.group_count()
        m.held.set(held)
        m.groups.set(groups)
        m.out_of_touch.set(self.links.out_of_touch())

    def _caught_up(self, p: int) -> int | None:
        """The lag, as far as the idleness rule may trust it: unknown (None) while the partition's
        leader does not answer, since its last figure may hide what waits beyond a cut (links.py)."""
        return self._lag(p) if self.links.in_touch(p) else None

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
