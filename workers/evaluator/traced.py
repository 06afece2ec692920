"""Which alert belongs to which trace (``spec.tracing``): the evaluator remembers the events whose
records carried a sampled trace context, by (partition, deviceId, event time), and an alert whose
event time and device are one of theirs is produced under an ``alertpipe.evaluate`` span of that
trace, its record carrying the span's context to the deliverer.

An event may wait in the reorder buffer and raise its alert when a later event moves the watermark:
the span runs from when the traced event was read to when its alert was produced, so that wait
shows. Alerts raised by a window or absence timer name no single event of a device at their event
time and start no span. The memory is bounded (``MAX_REMEMBERED``, oldest forgotten first), and holds
only sampled events.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from alertpipe.workers.tracing import HeaderList, Tracing

__all__ = ["MAX_REMEMBERED", "TracedEvent", "TracedEvents"]

MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class TracedEvent:
    traceparent: bytes
    read_ns: int  # wall clock when the evaluator took the record
    offset: int


class TracedEvents:
    """The sampled events not yet forgotten, and the span of an alert one of them raised."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._events: OrderedDict[tuple[int, str, int], TracedEvent] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def remember(self, partition: int, device: str, ts: int, traceparent: bytes, read_ns: int,
                 offset: int) -> None:
        events = self._events
        events[(partition, device, ts)] = TracedEvent(traceparent, read_ns, offset)
        if len(events) > self.limit:
            events.popitem(last=False)

    def of(self, partition: int, alert: dict[str, Any]) -> TracedEvent | None:
        """The traced event that raised ``alert`` (its device and event time), if one was seen."""
        device = alert["labels"].get("deviceId")
        if device is None:
            return None
        return self._events.get((partition, device, alert["eventTimeMs"]))

    def forget(self, partition: int) -> None:
        """A revoked partition: its events are another worker's now."""
        for k in [k for k in self._events if k[0] == partition]:
            del self._events[k]

    @staticmethod
    def span_headers(tracing: Tracing, event: TracedEvent, partition: int, alert: dict[str, Any],
                     alerts_topic: str) -> tuple[Any, HeaderList | None]:
        """Start the alert's ``alertpipe.evaluate`` span: (span, the record headers carrying it); the
        caller ends the span once the record is produced."""
        span = tracing.start("alertpipe.evaluate", event.traceparent, start_ns=event.read_ns, attributes={
            "alertpipe.rule": alert["rule"],
            "alertpipe.alert.id": alert["id"],
            "alertpipe.alert.status": alert["status"],
            "alertpipe.alert.severity": alert.get("severity", ""),
            "messaging.kafka.source.partition": partition,
            "messaging.kafka.offset": event.offset,
            "messaging.destination.name": alerts_topic,
        })
        return span, (tracing.headers(span) if span is not None else None)
