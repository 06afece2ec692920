"""The repartition topic's records and the pure decisions around them: routing and watermark records.

Stage 1 (the events consumer) forwards each selected event of a rule whose groups span devices as
an *event record* keyed by (rule, group key), and sends its partition's watermark to every
repartition partition as a *watermark record* (Flink's watermarks travel the same way through a
keyBy). Stage 2 (``group_worker``) reads them. Both are JSON arrays (orjson), the first element
the kind:

    [0, upstream partition, rule, rule fingerprint, ts ms, ingest ms | null, event]   event record
    [1, upstream partition, watermark ms | null]                                      watermark record

A null watermark says "this events partition is caught up, quiet for idleTimeout and has never
carried an event": stage 2 leaves it out of its minimum instead of waiting for it forever.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from alertpipe.workers.rules import CompiledRule
from alertpipe.workers.rules.groups import group_text

__all__ = [
    "EVENT",
    "WATERMARK",
    "ForwardedEvent",
    "RecordError",
    "Router",
    "WatermarkRecord",
    "WatermarkSender",
    "decode_record",
    "encode_event",
    "encode_watermark",
    "project",
    "projection",
    "record_key",
    "route",
    "stage1_watermark",
]

EVENT = 0
WATERMARK = 1


class RecordError(ValueError):
    """A repartition record that is not one of ours (another writer, a format change)."""


@dataclass(frozen=True, slots=True)
class ForwardedEvent:
    upstream: int
    rule: str
    fingerprint: str
    ts: int
    ingest: int | None
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WatermarkRecord:
    upstream: int
    wm: int | None


def record_key(rule: str, group: str) -> bytes:
    """The Kafka key of an event record: rule and group key (``cpu-by-site\\x1fsite=berlin``)."""
    return f"{rule}\x1f{group}".encode()


def route(key: bytes, partitions: int) -> int:
    """The repartition partition of a key: a stable hash, the same in every process and release
    (librdkafka's default partitioner is not the Java client's; ours needs no agreement)."""
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return h % partitions


def projection(rule: CompiledRule) -> frozenset[str] | None:
    """The top-level fields stage 2 needs of a rule's events; None: all of them.

    Aggregate and absence rules read only their group-key fields and the aggregated field (their
    annotations see the aggregate, the group key and times, never the event); a threshold rule's
    condition and annotations may read any field. The filter ran in stage 1.
    """
    if rule.kind == "threshold":
        return None
    keep = {"deviceId", "seq"}
    keep.update(p[0] for p in rule.by)
    if rule.field:
        keep.add(rule.field[0])
    return frozenset(keep)


def project(keep: frozenset[str] | None, event: dict[str, Any]) -> dict[str, Any]:
    if keep is None:
        return event
    return {k: v for k, v in event.items() if k in keep}


class Router:
    """(partition, key) of a rule's group in a topic of ``partitions`` partitions, remembered per
    (rule, group key) — rendering and hashing the key cost more than the rest of a forward — and
    each rule's projection."""

    def __init__(self, partitions: int, max_entries: int = 200_000) -> None:
        self.partitions = partitions
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str, Any], tuple[int, bytes]] = {}
        self._keep: dict[str, frozenset[str] | None] = {}

    def keep(self, rule: CompiledRule) -> frozenset[str] | None:
        fp = rule.fingerprint
        if fp not in self._keep:
            if len(self._keep) > 10_000:
                self._keep.clear()
            self._keep[fp] = projection(rule)
        return self._keep[fp]

    def __call__(self, rule: CompiledRule, key: Any) -> tuple[int, bytes]:
        ck = (rule.name, rule.fingerprint, key)
        hit = self._cache.get(ck)
        if hit is None:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            k = record_key(rule.name, group_text(rule, key))
            hit = self._cache[ck] = (route(k, self.partitions), k)
        return hit


def encode_event(upstream: int, rule: str, fingerprint: str, ts: int, ingest: int | None,
                 event: dict[str, Any]) -> bytes:
    return orjson.dumps([EVENT, upstream, rule, fingerprint, ts, ingest, event])


def encode_watermark(upstream: int, wm: int | None) -> bytes:
    return orjson.dumps([WATERMARK, upstream, wm])


def decode_record(raw: bytes | None) -> ForwardedEvent | WatermarkRecord:
    try:
        rec = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if rec.__class__ is not list or not rec or rec[0].__class__ is not int:
        raise RecordError("not a repartition record (expected a JSON array whose first element is its kind)")
    if rec[0] == EVENT and len(rec) == 7:
        _, up, rule, fp, ts, ingest, ev = rec
        if (up.__class__ is int and rule.__class__ is str and fp.__class__ is str and ts.__class__ is int
                and (ingest is None or ingest.__class__ is int) and ev.__class__ is dict
                and ev.get("deviceId").__class__ is str and ev.get("seq").__class__ is int):
            return ForwardedEvent(up, rule, fp, ts, ingest, ev)
    elif rec[0] == WATERMARK and len(rec) == 3:
        _, up, wm = rec
        if up.__class__ is int and (wm is None or wm.__class__ is int):
            return WatermarkRecord(up, wm)
    raise RecordError(f"malformed repartition record of kind {rec[0]!r}")


def stage1_watermark(wm: int, has_events: bool, lag: int | None, idle_for_ms: float,
                     idle_ms: int) -> tuple[bool, int | None]:
    """(send?, value) of an events partition's watermark record.

    A partition that has carried events sends its watermark. One that never has sends the idle
    mark (None) once it is caught up (no lag) and quiet for ``idle_ms`` (the idleness rule of
    stage 1); before that it sends nothing, so stage 2 waits for it.
    """
    if has_events:
        return True, wm
    if lag == 0 and idle_for_ms >= idle_ms:
        return True, None
    return False, None


@dataclass
class WatermarkSender:
    """Which watermark records are due: a changed value at once, an unchanged one as a heartbeat
    (a stage-2 partition that is new, or restored from an old checkpoint, hears it again)."""

    heartbeat_s: float = 10.0
    sent: dict[int, tuple[int | None, float]] = field(default_factory=dict)

    def due(self, upstream: int, wm: int | None, now: float) -> bool:
        last = self.sent.get(upstream)
        if last is not None and last[0] == wm and now - last[1] < self.heartbeat_s:
            return False
        self.sent[upstream] = (wm, now)
        return True

    def forget(self, upstream: int) -> None:
        self.sent.pop(upstream, None)
