"""The evaluator's records: a consumed batch decoded into what the engine takes, and the records
it writes besides alerts (late events, dead letters with the reason), with their headers.

Decoding is pure (no state changes): a batch can be decoded while an older one is evaluated.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError

from alertpipe.workers.config import SchemaSpec
from alertpipe.workers.evaluator import native as _native
from alertpipe.workers.events import (
    MAX_NESTING,
    EventError,
    ahead_reason,
    common_shape,
    decode_event,
    nesting_reason,
)
from alertpipe.workers.pii import PiiPolicy, redact_record
from alertpipe.workers.schemas import SchemaSet

__all__ = [
    "Batch",
    "Decoded",
    "Headers",
    "TopicSchemaCheck",
    "dead_letter",
    "decode_batch",
    "decode_batch_py",
    "fast_decode",
    "headers",
]

logger = logging.getLogger(__name__)

_PARTITION_EOF = getattr(KafkaError, "_PARTITION_EOF", -191)
_FATAL = getattr(KafkaError, "_FATAL", -150)


def is_fatal(err: Any) -> bool:
    """A consumer error after which the consumer is finished (librdkafka's fatal errors, e.g.
    FENCED_INSTANCE_ID after the group coordinator's broker died); a message's error carries the
    code only."""
    return bool(err.fatal()) or err.code() == _FATAL
Headers = list[tuple[str, str | bytes | None]]
# (msg, partition, offset, event | None, deviceId | reason | None, seq, ts) per record
Item = tuple[Any, int, int, Any, Any, int, int]


@dataclass(slots=True)
class Batch:
    """A decoded batch and the dedup answer of its events: one flag byte per event, in the order
    of the items that carry an event; a future while the round trip runs on the dedup thread."""

    items: list[Item]
    seen: Future[bytes] | bytes | None


@dataclass(slots=True)
class Decoded:
    items: list[Item]
    keys: list[bytes]  # dedup keys of the items that carry an event, in order (when dedup is on)
    partitions: list[int]
    offsets: list[int]
    skipped: int  # another track's keys
    fatal: Any = None  # a fatal consumer error among the records: the consumer is finished


def decode_batch(msgs: list[Any], tenant: str, owns: Callable[[Any], bool] | None,
                 key_of: Callable[[str, int], bytes] | None, now_ms: int, skew_ms: int,
                 check: Callable[[dict[str, Any]], str | None] | None = None,
                 key_parts: tuple[bytes, bytes] | None = None) -> Decoded:
    """Decode consumed records: an event (fast path, else the shared codec), a malformed one (the
    reason: dead-letter it) or another canary track's (only the position moves). ``key_of``: the
    dedup key of (deviceId, seq), None without dedup (``key_parts``: its (head, scope), for the
    native path). An event more than ``skew_ms`` ahead of ``now_ms`` (ingest.maxFutureSkew) is
    dead-lettered: it would move the watermark ahead. With ``check`` (spec.schema validated on the
    topic), so is an event against its type's schema.

    With the native hot path installed (``native.decode_common``) and neither a track filter nor
    a topic schema, the records in the common shape are decoded there and every other one here,
    one at a time (``decode_batch_py``): the same result (a differential property test)."""
    native = _native.decode_common
    if native is None or owns is not None or check is not None or (key_of is not None and key_parts is None):
        return decode_batch_py(msgs, tenant, owns, key_of, now_ms, skew_ms, check)
    fatal: list[Any] = []

    def slow(msg: Any) -> tuple[Item | None, bytes | None]:
        one = decode_batch_py([msg], tenant, None, key_of, now_ms, skew_ms)
        if one.fatal is not None:
            fatal.append(one.fatal)
        return (one.items[0] if one.items else None), (one.keys[0] if one.keys else None)

    head, scope = key_parts if key_of is not None and key_parts is not None else (None, b"")
    items, keys, ps, offs = native(msgs, tenant, now_ms + skew_ms, head, scope, orjson.loads, slow)
    return Decoded(items, keys, ps, offs, 0, fatal[-1] if fatal else None)


_DEEP_BYTES = 2 * (MAX_NESTING + 1)  # the shortest JSON nested deeper than MAX_NESTING


def decode_batch_py(msgs: list[Any], tenant: str, owns: Callable[[Any], bool] | None,
                    key_of: Callable[[str, int], bytes] | None, now_ms: int, skew_ms: int,
                    check: Callable[[dict[str, Any]], str | None] | None = None) -> Decoded:
    """``decode_batch`` in pure Python (the path without the native module, and its reference)."""
    ts_limit = now_ms + skew_ms
    items: list[Item] = []
    keys: list[bytes] = []
    ps: list[int] = []
    offs: list[int] = []
    loads = orjson.loads
    skipped = 0
    fatal = None
    for msg in msgs:
        if msg.error() is not None:
            err = msg.error()
            if is_fatal(err):
                fatal = err
            elif err.code() != _PARTITION_EOF:
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
        # decodes, but could never be checkpointed: dead-letter it (only a long record can be)
        deep = nesting_reason(raw) if raw and len(raw) >= _DEEP_BYTES else None
        if deep is not None:
            items.append((msg, p, off, None, deep, 0, -1))
            continue
        fast = fast_decode(loads, raw, tenant)
        if fast is None:
            try:
                ev = decode_event(msg.value() or b"", tenant)
            except EventError as exc:
                items.append((msg, p, off, None, str(exc), 0, -1))  # malformed: dead-letter it
                continue
            fast = (ev.data, ev.device_id, ev.seq, ev.ts_ms)
        d, dev, seq, ts = fast
        if ts > ts_limit:
            items.append((msg, p, off, None, ahead_reason(ts, now_ms, skew_ms, "evaluator"), 0, -1))
            continue
        if check is not None:
            why = check(d)
            if why is not None:
                items.append((msg, p, off, None, f"schema: {why}", 0, -1))
                continue
        if owns is not None and msg.key() is None and not owns(dev):  # unkeyed: judged by deviceId
            items.append((msg, p, off, None, None, 0, -1))
            skipped += 1
            continue
        items.append((msg, p, off, d, dev, seq, ts))
        if key_of is not None:
            keys.append(key_of(dev, seq))
            ps.append(p)
            offs.append(off)
    return Decoded(items, keys, ps, offs, skipped, fatal)


class TopicSchemaCheck:
    """spec.schema's check of an event when the schema is validated on the topic (``validateAt:
    topic``), compiled once per schema; None when it is validated at ingest or there is none."""

    def __init__(self) -> None:
        self._spec: SchemaSpec | None = None
        self._set: SchemaSet | None = None

    def of(self, spec: SchemaSpec | None) -> Callable[[dict[str, Any]], str | None] | None:
        if spec is None or spec.validate_at != "topic":
            return None
        if self._spec is not spec:
            self._spec, self._set = spec, SchemaSet(spec)
        return self._set.check if self._set is not None else None


def fast_decode(
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


def headers(msg: Any, kind: str, reason: str | None = None) -> Headers:
    """Where a late or dead-lettered record came from."""
    h: Headers = [
        ("alertpipe-kind", kind.encode()),
        ("alertpipe-source-topic", msg.topic().encode()),
        ("alertpipe-source-partition", str(msg.partition()).encode()),
        ("alertpipe-source-offset", str(msg.offset()).encode()),
    ]
    if reason is not None:
        h.append(("alertpipe-reason", reason.encode()[:1024]))
    return h


def dead_letter(
    msg: Any, reason: str, at_ms: int, policy: PiiPolicy | None = None
) -> tuple[bytes, bytes | None]:
    """The dead-letter envelope of a malformed event and its record key: the reason and the record,
    byte for byte; with spec.pii (``policy``), its PII fields masked, or only a digest of it when it
    is not a JSON object (its fields cannot be found)."""
    envelope: dict[str, Any] = {
        "kind": "malformed-event",
        "stage": "evaluator",
        "reason": reason,
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": (msg.key() or b"").decode("utf-8", "replace")[:1024],
        **_dead_letter_value(msg.value() or b""),
        "at": at_ms,
    }
    key = msg.key()
    if policy is not None:
        masked, note = redact_record(msg.value() or b"", policy)
        for k in ("valueBase64", "valueBytes", "truncated"):
            envelope.pop(k, None)
        if masked is None:
            envelope["valueDigest"] = note
        else:
            envelope.update(_dead_letter_value(masked))
        envelope["piiRedacted"] = True
        if policy.covers(("deviceId",)):
            envelope["key"] = policy.mask(envelope["key"])
        key = envelope["key"].encode()
    return orjson.dumps(envelope), key


DEAD_LETTER_VALUE_BYTES = 256 * 1024  # base64 makes 4/3 of it: the record stays under Kafka's 1 MB


def _dead_letter_value(raw: bytes) -> dict[str, Any]:
    """The record's value for its dead-letter envelope: whole, or its head when a whole copy
    would not fit in one Kafka record (the source topic and offset point at the rest)."""
    b64 = base64.b64encode
    if len(raw) <= DEAD_LETTER_VALUE_BYTES:
        return {"valueBase64": b64(raw).decode()}
    head = b64(raw[:DEAD_LETTER_VALUE_BYTES]).decode()
    return {"valueBase64": head, "valueBytes": len(raw), "truncated": True}
