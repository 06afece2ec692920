"""Request bodies of POST /v1/events: a JSON array or NDJSON in, checked Kafka records out.

Pure functions (no I/O), the hot path of the ingestor. Two kinds of bad input get two answers:
a body that is not JSON (a syntax error anywhere) is refused whole with 400 and where it broke;
an event that is JSON but not a valid event is rejected alone (index + reason) while the others
go on. Each accepted event is stamped with ``_ingestTs`` (epoch ms at the ingestor, overwriting any
value the client sent) and re-serialised compactly; its Kafka key is the deviceId.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from alertpipe.workers.events import EventError, ahead_reason, common_shape, event_from_obj

__all__ = ["INGEST_TS_FIELD", "Batch", "BodyError", "Reject", "build_batch", "parse_body", "parse_events"]

INGEST_TS_FIELD = "_ingestTs"

_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


class BodyError(ValueError):
    """The body cannot be read as events; the message says where (one line)."""


@dataclass(frozen=True, slots=True)
class Reject:
    index: int  # position of the event in the request (0-based; NDJSON: among non-blank lines)
    reason: str
    line: int | None = None  # NDJSON: the 1-based line of the body

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "reason": self.reason}
        if self.line is not None:
            d["line"] = self.line
        return d


@dataclass(slots=True)
class Batch:
    records: list[tuple[str, bytes]]  # (deviceId, event JSON) per accepted event, in request order
    indexes: list[int]  # request index of each record
    rejects: list[Reject]
    total: int


def _hint(exc: orjson.JSONDecodeError) -> str:
    """What to do about the commonest bad bodies: NaN/Infinity, bytes that are not UTF-8, nesting."""
    at = exc.doc[exc.pos:exc.pos + 9]
    word = at.decode("utf-8", "replace") if isinstance(at, bytes) else at
    if word.lstrip("-").startswith(("NaN", "Infinity")) or "infinity" in exc.msg:
        return " (NaN and Infinity are not JSON: send null or leave the field out)"
    if "UTF-8" in exc.msg:
        return " (the body must be UTF-8 text)"
    if "depth" in exc.msg:
        return " (more than 1024 levels of nesting)"
    return ""


def _where(exc: orjson.JSONDecodeError, line_offset: int = 0) -> str:
    where = f"line {exc.lineno + line_offset} column {exc.colno} (char {exc.pos}): {exc.msg}"
    return where + _hint(exc)


def parse_body(body: bytes, content_type: str = "") -> tuple[list[Any], list[int] | None]:
    """The decoded items and, for NDJSON, their 1-based line numbers; BodyError when not JSON.

    ``application/json`` (or a body starting with ``[``) is one document: an array of events or a
    single event object. NDJSON content types (or anything else) are one event per line.
    """
    stripped = body.lstrip()
    if not stripped:
        raise BodyError("empty body: send a JSON array of events or NDJSON (one event per line)")
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype not in _NDJSON_TYPES and (ctype == "application/json" or stripped[:1] == b"["):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"malformed JSON at {_where(exc)}") from None
        if isinstance(doc, list):
            return doc, None
        if isinstance(doc, dict):
            return [doc], None
        raise BodyError("the body must be a JSON array of events, an event object, or NDJSON")
    items: list[Any] = []
    lines: list[int] = []
    for n, raw in enumerate(body.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            items.append(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            hint = _hint(exc)
            raise BodyError(f"malformed NDJSON at line {n} column {exc.colno}: {exc.msg}{hint}") from None
        lines.append(n)
    return items, lines


def parse_events(events: Sequence[bytes]) -> list[Any]:
    """Events sent one JSON document each (gRPC's ``repeated bytes events``); BodyError naming the
    first one that is not JSON, as ``parse_body`` refuses a body that is not."""
    items: list[Any] = []
    loads = orjson.loads
    for i, raw in enumerate(events):
        try:
            items.append(loads(raw))
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"events[{i}]: malformed JSON at {_where(exc)}") from None
    return items


def _fast_device_id(obj: Any, tenant: str) -> str | None:
    """The deviceId when ``obj`` is an event in the common shape, else None (see ``common_shape``:
    building the frozen ``Event`` is over half of ``event_from_obj``'s cost, and the ingestor only
    needs the key)."""
    shape = common_shape(obj, tenant)
    return shape[0] if shape is not None else None


def build_batch(
    items: list[Any],
    lines: list[int] | None,
    tenant: str,
    ingest_ts_ms: int,
    *,
    max_event_bytes: int | None = None,
    max_future_skew_ms: int | None = None,
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Batch:
    """Check each item as an event of ``tenant`` and serialise the valid ones, stamped.

    With ``max_event_bytes``, a larger event is rejected alone (Kafka would refuse it, and a retry
    of the whole request could never succeed); with ``max_future_skew_ms``, so is an event whose
    ts is further ahead of ``ingest_ts_ms``; with ``check`` (the pipeline's event schemas), an
    event it has a reason against (the JSON path and what is wrong) is rejected alone.
    """
    records: list[tuple[str, bytes]] = []
    indexes: list[int] = []
    rejects: list[Reject] = []
    dumps = orjson.dumps
    ts_limit = ingest_ts_ms + max_future_skew_ms if max_future_skew_ms is not None else None
    for i, obj in enumerate(items):
        shape = common_shape(obj, tenant) if tenant else None
        if shape is not None:
            device_id, ts_ms = shape[0], shape[2]
        else:
            try:
                ev = event_from_obj(obj, tenant)
            except EventError as exc:
                rejects.append(Reject(i, str(exc), lines[i] if lines is not None else None))
                continue
            device_id, ts_ms = ev.device_id, ev.ts_ms
        if ts_limit is not None and ts_ms > ts_limit:
            reason = ahead_reason(ts_ms, ingest_ts_ms, max_future_skew_ms or 0, "ingestor")
            rejects.append(Reject(i, reason or "ts is ahead", lines[i] if lines is not None else None))
            continue
        if check is not None:
            why = check(obj)
            if why is not None:
                rejects.append(Reject(i, f"schema: {why}", lines[i] if lines is not None else None))
                continue
        obj[INGEST_TS_FIELD] = ingest_ts_ms
        try:
            value = dumps(obj)
        except TypeError as exc:  # an integer beyond 64 bits, nesting past orjson's 255 levels
            why = "nested more than 254 levels deep" if "Recursion" in str(exc) else str(exc)
            rejects.append(Reject(i, f"cannot be re-encoded: {why}", lines[i] if lines is not None else None))
            continue
        if max_event_bytes is not None and len(value) > max_event_bytes:
            rejects.append(Reject(
                i,
                f"the event is {len(value)} bytes, over the limit of {max_event_bytes}"
                " (ingest.maxEventBytes): send large payloads by reference",
                lines[i] if lines is not None else None,
            ))
            continue
        records.append((device_id, value))
        indexes.append(i)
    return Batch(records, indexes, rejects, len(items))
