"""The event codec shared by the ingestor and the evaluator: bytes in, a checked Event or a reason out.

An event is a JSON object with ``tenant``, ``deviceId`` (the Kafka key), ``seq`` (per-device,
increasing integer), ``ts`` (event time: RFC 3339 text or epoch milliseconds), ``type`` and any
other fields. Checked by hand rather than with pydantic: this runs once per event on the hot path
of both workers, and a handful of isinstance checks is several times faster than a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "Event",
    "EventError",
    "ahead_reason",
    "nesting_reason",
    "common_shape",
    "decode_event",
    "event_from_obj",
    "parse_ts_ms",
]

MAX_DEVICE_ID = 256
MAX_TYPE = 128
# Timestamps outside [2000-01-01, 2200-01-01) are taken for a unit mistake (seconds, microseconds).
_MIN_MS = 946_684_800_000
_MAX_MS = 7_258_118_400_000
MIN_TS_MS = _MIN_MS  # public bounds of a valid ts (epoch ms), for decoders with a fast path
MAX_TS_MS = _MAX_MS


class EventError(ValueError):
    """An event is malformed; the message is the one-line reason sent with it to the dead-letter topic."""


@dataclass(slots=True, frozen=True)
class Event:
    tenant: str
    device_id: str
    seq: int
    ts_ms: int
    type: str
    data: dict[str, Any]  # the whole object as sent, required fields included

    def to_json(self) -> bytes:
        return orjson.dumps(self.data)


def parse_ts_ms(ts: Any) -> int:
    """Event time in epoch milliseconds from RFC 3339 text or an epoch-ms number."""
    if isinstance(ts, bool):
        raise EventError("ts must be RFC 3339 text or epoch milliseconds, not a boolean")
    if isinstance(ts, float) and not math.isfinite(ts):
        raise EventError(f"ts must be a finite number of epoch milliseconds, not {ts}")
    if isinstance(ts, int | float):
        ms = int(ts)
    elif isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise EventError(f"ts {ts[:64]!r} is not RFC 3339 (e.g. 2026-01-02T03:04:05Z)") from None
        if dt.tzinfo is None:
            raise EventError(f"ts {ts[:64]!r} has no time zone; add Z or an offset")
        ms = int(dt.timestamp() * 1000)
    else:
        raise EventError("ts must be RFC 3339 text or epoch milliseconds")
    if not _MIN_MS <= ms < _MAX_MS:
        raise EventError(f"ts {ms} is not in epoch milliseconds between 2000 and 2200")
    return ms


MAX_NESTING = 254  # orjson re-encodes (alerts, checkpoints, the ingestor's records) up to this depth


def nesting_reason(raw: bytes) -> str | None:
    """Why an event nested deeper than ``MAX_NESTING`` is refused, or None when it is not.

    Cheap for every record: only one with that many brackets is measured (iteratively). Such an
    event would decode, then fail every time the evaluator checkpoints its state: a poison pill.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # not JSON at all: the decoder gives that reason
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"the event is nested more than {MAX_NESTING} levels deep: flatten it"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return None


def ahead_reason(ts_ms: int, now_ms: int, max_skew_ms: int, who: str) -> str | None:
    """Why an event time too far ahead of ``who``'s clock is refused, or None when it is not.

    One event from a device whose clock is an hour fast would move its partition's watermark an
    hour ahead and make every other device's events late for that hour.
    """
    ahead = ts_ms - now_ms
    if ahead <= max_skew_ms:
        return None
    return (
        f"ts is {ahead / 1000:.0f}s ahead of the {who}'s clock (limit {max_skew_ms / 1000:.0f}s,"
        " ingest.maxFutureSkew): fix the device's clock"
    )


def event_from_obj(obj: Any, tenant: str | None = None) -> Event:
    """Check a decoded JSON value; ``tenant``, when given, must match the event's."""
    if not isinstance(obj, dict):
        raise EventError("an event must be a JSON object")
    t = obj.get("tenant")
    if not isinstance(t, str) or not t:
        raise EventError("tenant is required and must be a non-empty string")
    if tenant is not None and t != tenant:
        raise EventError(f"tenant {t[:64]!r} does not belong to this pipeline (expected {tenant!r})")
    dev = obj.get("deviceId")
    if not isinstance(dev, str) or not dev or len(dev) > MAX_DEVICE_ID:
        raise EventError(f"deviceId is required: a string of 1..{MAX_DEVICE_ID} characters")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise EventError("seq is required: a non-negative integer")
    if "ts" not in obj:
        raise EventError("ts is required: RFC 3339 text or epoch milliseconds")
    ts_ms = parse_ts_ms(obj["ts"])
    typ = obj.get("type")
    if not isinstance(typ, str) or not typ or len(typ) > MAX_TYPE:
        raise EventError(f"type is required: a string of 1..{MAX_TYPE} characters")
    return Event(t, dev, seq, ts_ms, typ, obj)


def decode_event(raw: bytes, tenant: str | None = None) -> Event:
    """Decode and check one event; raises EventError with the reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"not JSON: {exc}") from None
    deep = nesting_reason(raw)
    if deep is not None:
        raise EventError(deep)
    return event_from_obj(obj, tenant)


def common_shape(obj: Any, tenant: str) -> tuple[str, int, int] | None:
    """(deviceId, seq, ts) when ``obj`` is an event of ``tenant`` in the common shape (epoch-ms
    ``ts``, every required field of its exact type), else None.

    The hot paths of the ingestor and the evaluator try this first and send anything else through
    ``event_from_obj``, which accepts the rest or names the reason: it accepts a subset of what
    ``event_from_obj`` accepts (a property test checks this), without building an ``Event``.
    """
    if obj.__class__ is not dict:
        return None
    dev = obj.get("deviceId")
    seq = obj.get("seq")
    ts = obj.get("ts")
    typ = obj.get("type")
    if (
        obj.get("tenant") == tenant
        and dev.__class__ is str
        and 0 < len(dev) <= MAX_DEVICE_ID
        and seq.__class__ is int
        and seq >= 0
        and ts.__class__ is int
        and MIN_TS_MS <= ts < MAX_TS_MS
        and typ.__class__ is str
        and 0 < len(typ) <= MAX_TYPE
    ):
        return dev, seq, ts
    return None
