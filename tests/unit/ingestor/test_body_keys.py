"""Body parsing, event checks, API keys and the answer decision of the ingestor (pure, no I/O)."""

from __future__ import annotations

import gzip

import orjson
import pytest

from alertpipe.workers.errors import ConfigError
from alertpipe.workers.ingestor.app import decide
from alertpipe.workers.ingestor.body import INGEST_TS_FIELD, BodyError, build_batch, parse_body
from alertpipe.workers.ingestor.keys import AuthResult, KeyRing
from alertpipe.workers.ingestor.producer import BatchResult, producer_options

pytestmark = pytest.mark.unit

NOW = 1_767_323_045_123


def ev(i: int, **kw: object) -> dict[str, object]:
    base = {"tenant": "acme", "deviceId": f"d{i % 7}", "seq": i, "ts": 1_767_323_000_000 + i, "type": "t"}
    return base | kw


def test_array_and_ndjson_give_the_same_records() -> None:
    events = [ev(i) for i in range(5)]
    arr, lines = parse_body(orjson.dumps(events), "application/json")
    assert lines is None and arr == events
    nd = b"\n".join(orjson.dumps(e) for e in events) + b"\n\n"
    items, lines2 = parse_body(nd, "application/x-ndjson")
    assert items == events and lines2 == [1, 2, 3, 4, 5]
    # sniffing without a content type
    assert parse_body(orjson.dumps(events), "")[0] == events
    assert parse_body(nd, "")[0] == events
    a = build_batch(arr, None, "acme", NOW)
    b = build_batch(items, lines2, "acme", NOW)
    assert a.records == b.records and len(a.records) == 5 and not a.rejects
    key, value = a.records[3]
    assert key == "d3"
    assert orjson.loads(value) == events[3] | {INGEST_TS_FIELD: NOW}


def test_single_object_is_one_event() -> None:
    items, _ = parse_body(orjson.dumps(ev(1)), "application/json; charset=utf-8")
    assert items == [ev(1)]


@pytest.mark.parametrize(
    ("body", "ctype", "where"),
    [
        (b'[{"a": 1},\n {"b": }]', "application/json", "line 2 column 8"),
        (b'{"a": 1}\n{"b": 2\n', "application/x-ndjson", "line 2 column"),
        (b"   ", "", "empty body"),
        (b'"text"', "application/json", "must be a JSON array"),
        (b"[1, 2", "", "line 1 column 6"),
    ],
)
def test_malformed_bodies_say_where(body: bytes, ctype: str, where: str) -> None:
    with pytest.raises(BodyError, match=where) as exc:
        parse_body(body, ctype)
    assert "\n" not in str(exc.value)


def test_invalid_events_are_rejected_alone_with_index_and_reason() -> None:
    items = [ev(0), {"tenant": "acme"}, ev(2, tenant="other"), ev(3, seq=-1), "x", ev(5, ts="yesterday")]
    batch = build_batch(items, None, "acme", NOW)
    assert [i for i in batch.indexes] == [0]
    reasons = {r.index: r.reason for r in batch.rejects}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "deviceId" in reasons[1]
    assert "does not belong to this pipeline" in reasons[2]
    assert "seq" in reasons[3]
    assert "JSON object" in reasons[4]
    assert "RFC 3339" in reasons[5]
    nd = b"\n".join(orjson.dumps(x) for x in items[:2])
    items2, lines = parse_body(b"\n" + nd, "application/x-ndjson")
    b2 = build_batch(items2, lines, "acme", NOW)
    assert b2.rejects[0].to_dict() == {"index": 1, "line": 3, "reason": b2.rejects[0].reason}


def test_client_cannot_forge_the_ingest_time() -> None:
    batch = build_batch([ev(1, _ingestTs=5)], None, "acme", NOW)
    assert orjson.loads(batch.records[0][1])[INGEST_TS_FIELD] == NOW


KEYS = """
# platform keys
acme:acme-key-0123456789
acme/p2:acme-p2-key-0123456789
globex:globex-key-0123456789
"""


def test_keys_map_to_tenants_and_pipelines() -> None:
    ring = KeyRing.from_text(KEYS)
    assert len(ring) == 3
    auth = ring.authenticate
    assert auth("Bearer acme-key-0123456789", "acme", "p1") is AuthResult.OK
    assert auth("bearer  acme-key-0123456789 ", "acme", "p1") is AuthResult.OK
    assert auth("Bearer acme-p2-key-0123456789", "acme", "p2") is AuthResult.OK
    assert auth("Bearer acme-p2-key-0123456789", "acme", "p1") is AuthResult.FORBIDDEN
    assert auth("Bearer globex-key-0123456789", "acme", "p1") is AuthResult.FORBIDDEN
    assert auth("Bearer nope-nope-nope-nope", "acme", "p1") is AuthResult.UNKNOWN
    assert auth(None, "acme", "p1") is AuthResult.MISSING
    assert auth("Basic acme-key-0123456789", "acme", "p1") is AuthResult.MISSING
    assert auth("Bearer ", "acme", "p1") is AuthResult.MISSING
    assert "acme-key" not in repr(ring)


def test_same_key_for_two_tenants_is_allowed_for_both() -> None:
    ring = KeyRing.from_text("a:shared-key-0123456789\nb:shared-key-0123456789\n")
    assert ring.authenticate("Bearer shared-key-0123456789", "b", "p") is AuthResult.OK


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("acme-key-without-tenant-0123", "keys:1"),
        ("x:short", "shorter than"),
        ("\n/p:k0123456789abcdefg", "keys:2"),
    ],
)
def test_bad_key_lines_name_the_line_not_the_key(text: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as exc:
        KeyRing.from_text(text, source="keys")
    assert "0123456789" not in str(exc.value) and "short" not in str(exc.value).split(":")[0]


def test_decide() -> None:
    batch = build_batch([ev(0), ev(1), {"x": 1}], None, "acme", NOW)
    status, body, retry = decide(batch, BatchResult(2, 0, None, 0.01))
    assert (status, body["accepted"], body["rejectedCount"], retry) == (202, 2, 1, None)
    status, body, retry = decide(batch, BatchResult(1, 1, "Local: Message timed out", 5.0))
    assert status == 503 and retry and body["accepted"] == 0 and "timed out" in body["error"]
    status, _, retry = decide(batch, BatchResult(1, 1, "the producer queue is full", 0.0, queue_full=True))
    assert status == 429 and retry


def test_producer_guarantees_cannot_be_weakened() -> None:
    opts = producer_options("h:1", {"acks": "1", "enable.idempotence": "false", "linger.ms": "20"},
                            delivery_timeout_ms=5000)
    assert opts["acks"] == "all" and opts["enable.idempotence"] is True and opts["linger.ms"] == "20"
    assert opts["compression.type"] == "lz4" and opts["message.timeout.ms"] == 5000


def test_gzip_is_not_parsed_here() -> None:
    # aiohttp decompresses Content-Encoding: gzip before the handler; raw gzip is not JSON.
    with pytest.raises(BodyError):
        parse_body(gzip.compress(b"[]"), "application/json")
