"""Reading both tracks' alert transitions for the shadow comparison (decisions/shadow.py): the
stable alerts topic and the candidate's shadow topic, from a point in time to their current end.

No consumer group (partitions are assigned, nothing is committed): the operator reads without
disturbing the deliverer. Records with an ``alertpipe-kind`` header (late events and dead letters
the shadow candidate writes to the same topic) are not alerts and are left out. Blocking: called in
a worker thread.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

__all__ = ["read_alerts"]

logger = logging.getLogger(__name__)


def read_alerts(
    options: dict[str, str], topic: str, since_ms: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Alert transitions on ``topic`` produced at or after ``since_ms`` (record timestamps)."""
    c = Consumer({**options, "group.id": "alertpipe-operator-shadow", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "client.id": "alertpipe-operator-shadow"})
    out: list[dict[str, Any]] = []
    try:
        meta = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return out
        parts = [TopicPartition(topic, p, since_ms) for p in meta.partitions]
        starts = c.offsets_for_times(parts, timeout=timeout)
        ends: dict[int, int] = {}
        assign = []
        for tp in starts:
            _low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
            if tp.offset >= 0 and tp.offset < high:
                ends[tp.partition] = high
                assign.append(TopicPartition(topic, tp.partition, tp.offset))
        if not assign:
            return out
        c.assign(assign)
        while ends:
            msgs = c.consume(1000, 1.0)
            if not msgs:
                break
            for m in msgs:
                part, off, value = m.partition(), m.offset(), m.value()
                if m.error() is not None or part is None or off is None:
                    continue
                if off + 1 >= ends.get(part, 0):
                    ends.pop(part, None)
                if value is None or any(h[0] == "alertpipe-kind" for h in (m.headers() or [])):
                    continue
                try:
                    out.append(orjson.loads(value))
                except orjson.JSONDecodeError:
                    continue
    finally:
        c.close()
    return out
