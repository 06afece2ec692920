"""What the evaluator writes once a partition raised something: its alerts (the canary track's
share only; under the trace of the event that raised one, with spec.tracing), the events it
forwards to the repartition stage, and its sequence gaps. A mixin of ``Evaluator``, as control.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.stage import Outputs
from alertpipe.workers.evaluator.traced import TracedEvent, TracedEvents
from alertpipe.workers.rules.engine import Partition
from alertpipe.workers.tracing import TracingHolder

if TYPE_CHECKING:
    from alertpipe.workers.config import PipelineConfig
    from alertpipe.workers.config.models import Topics
    from alertpipe.workers.evaluator.group_worker import GroupWorker

__all__ = ["Emitting"]


class Emitting:
    cfg: PipelineConfig
    topics: Topics
    metrics: EvaluatorMetrics
    outputs: Outputs
    groups: GroupWorker | None
    track_alerts: Any
    pending_gaps: dict[int, list[dict[str, Any]]]
    tracing: TracingHolder
    traced: TracedEvents
    clock: Callable[[], float]

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
            traced = self.traced if len(self.traced) else None
            for a in alerts:
                event = traced.of(p, a) if traced is not None else None
                if event is None:
                    self.outputs.produce(self.topics.alerts, orjson.dumps(a), a["id"].encode())
                else:
                    self._produce_traced(a, p, event)
                m.alerts.labels(self.cfg.tenant, a["rule"], a["status"]).inc()
                by_event = m.event_to_alert.labels("event_time")
                by_event.observe(max(0.0, (now_ms - a["eventTimeMs"]) / 1000))
                if a.get("ingestTimeMs"):
                    by_ingest = m.event_to_alert.labels("ingest_time")
                    by_ingest.observe(max(0.0, (now_ms - a["ingestTimeMs"]) / 1000))
        if self.groups is not None:
            forwarded = part.take_forwarded()
            if forwarded:
                self.groups.forward(p, forwarded)
        gaps = part.take_gaps()
        if gaps:
            self.pending_gaps.setdefault(p, []).extend(gaps)
            self.metrics.gaps.inc(len(gaps))
            self.metrics.gap_events.inc(sum(g["missing"] for g in gaps))

    def _produce_traced(self, alert: dict[str, Any], p: int, event: TracedEvent) -> None:
        span, hdrs = TracedEvents.span_headers(self.tracing.current, event, p, alert, self.topics.alerts)
        self.outputs.produce(self.topics.alerts, orjson.dumps(alert), alert["id"].encode(), headers=hdrs)
        if span is not None:
            span.end()
