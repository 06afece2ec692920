"""Reading a whole topic (or its tail since a time) once, for ``alertpipe dlq`` and ``alertpipe explain``.

Partitions are assigned directly (no consumer group, nothing committed) and read up to the high
watermark observed at the start, so a command ends even while the deliverer keeps writing.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from alertpipe.workers.config import parse_duration

__all__ = ["parse_time", "read_topic"]


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from RFC 3339 text or a duration ago (``90m`` = ninety minutes before now)."""
    now = time.time() if now is None else now
    if re.fullmatch(r"([0-9]+(ms|s|m|h|d))+", text):
        return now - parse_duration(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither RFC 3339 (2026-01-02T03:04:05Z) nor a duration (90m)"
        ) from None
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or an offset")
    return dt.timestamp()


def read_topic(
    options: dict[str, Any], topic: str, *, since: float | None = None, timeout: float = 30.0
) -> Iterator[Any]:
    """Every message of ``topic`` (from ``since`` epoch seconds if given) up to the current end."""
    c = Consumer(
        {
            **options,
            "group.id": f"alertpipe-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        meta = c.list_topics(topic, timeout=10)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise KafkaException(f"topic {topic!r} not found")
        parts = sorted(tmeta.partitions)
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            starts[p], ends[p] = lo, hi
        if since is not None:
            found = c.offsets_for_times(
                [TopicPartition(topic, p, int(since * 1000)) for p in parts], timeout=10
            )
            for tp in found:
                starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
        todo = {p for p in parts if ends[p] > starts[p]}
        if not todo:
            return
        c.assign(
            [
                TopicPartition(topic, p, starts[p] if since is not None else OFFSET_BEGINNING)
                for p in sorted(todo)
            ]
        )
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic!r} took longer than {timeout:g}s")
            for msg in c.consume(num_messages=1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                part = int(msg.partition() or 0)
                off = int(msg.offset() or 0)
                if part not in todo:
                    continue
                if off < ends[part]:
                    yield msg
                if off >= ends[part] - 1:
                    todo.discard(part)
    finally:
        c.close()
