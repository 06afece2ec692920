"""The native decode path (alertpipe_evalcore, Rust) against the pure Python one it replaces:
for any batch of records — events in and out of the common shape, each required field at and
beyond its bounds, text that is not ASCII, ints beyond 64 bits, copies, records ahead of the
clock, malformed bytes, no value, deep nesting, consumer errors — ``decode_batch`` gives exactly
what ``decode_batch_py`` gives: the same items (the same message objects, equal dicts), dedup
keys, partitions, offsets and fatal error, with dedup on and off.

``make bootstrap`` builds the module; with ALERTPIPE_NATIVE=0 (the pure Python path chosen on
purpose) these tests skip, and the evaluator's other tests run that path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.workers.evaluator import native
from alertpipe.workers.evaluator.records import decode_batch, decode_batch_py
from alertpipe.workers.evaluator.redis_state import dedup_key_parts, dedup_keys
from alertpipe.workers.events import MAX_NESTING, MAX_TS_MS, MIN_TS_MS

pytestmark = pytest.mark.unit

if os.environ.get("ALERTPIPE_NATIVE") == "0":
    pytest.skip("ALERTPIPE_NATIVE=0: the pure Python path is chosen", allow_module_level=True)
if native.decode_common is None:  # make bootstrap builds it where cargo is: missing, a broken setup
    if shutil.which("cargo", path=f"{Path.home() / '.cargo' / 'bin'}:{os.environ.get('PATH', '')}") is None:
        pytest.skip("no cargo on this machine: the native path cannot be built here", allow_module_level=True)
    raise RuntimeError("alertpipe_evalcore is not installed: run `make bootstrap` (or ALERTPIPE_NATIVE=0)")

TENANT = "acme"
NOW_MS = 1_767_225_600_000
SKEW_MS = 60_000

texts = st.text(st.characters(codec="utf-8"), max_size=4) | st.text(max_size=3)  # non-ASCII, surrogates
common = st.fixed_dictionaries({
    "tenant": st.just(TENANT), "deviceId": st.sampled_from(["d1", "d2", "dé"]),
    "seq": st.integers(0, 20), "ts": st.integers(NOW_MS - 10_000, NOW_MS),
    "type": st.sampled_from(["cpu", "t"]),
}, optional={"value": st.floats(allow_nan=False), "region": texts})  # fmt: skip
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "tenant": st.sampled_from([TENANT, "globex", "", 1, None, "acmé"]),
    "deviceId": st.one_of(texts, st.integers(-5, 5),
                          st.sampled_from(["d" * 256, "d" * 257, "é" * 256, "é" * 257])),
    "seq": st.one_of(st.integers(-2, 50), st.booleans(), st.floats(allow_nan=False),
                     st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63)])),
    "ts": st.one_of(
        st.integers(NOW_MS - 10_000, NOW_MS + 2 * SKEW_MS),
        st.sampled_from([MIN_TS_MS - 1, MIN_TS_MS, MAX_TS_MS - 1, MAX_TS_MS, 2**64, -1]),
        st.just("2026-01-01T00:00:00Z"), st.booleans(), st.floats(1e12, 2e12),
    ),
    "type": st.one_of(texts, st.integers(-5, 5), st.sampled_from(["t" * 128, "t" * 129])),
    "value": st.one_of(st.floats(allow_nan=False), st.integers(-(2**70), 2**70), texts, st.none()),
}
fields = st.fixed_dictionaries({}, optional=FIELDS)


def _put(key: str, ev: dict[str, Any], value: Any) -> dict[str, Any]:
    return {**ev, key: value}


# a common event with one field at or beyond its bounds, or missing: where the two paths part
near = st.one_of(
    *[st.builds(partial(_put, k), common, s) for k, s in FIELDS.items()],
    st.builds(lambda ev, k: {f: v for f, v in ev.items() if f != k}, common,
              st.sampled_from(["tenant", "deviceId", "seq", "ts", "type"])),
)


def nested(depth: int) -> bytes:
    """A common event with a field nested ``depth`` lists deep (written by hand: orjson refuses)."""
    head = b'{"tenant":"acme","deviceId":"d1","seq":1,"ts":1767225600000,"type":"t","x":'
    return head + b"[" * depth + b"1" + b"]" * depth + b"}"


values = st.one_of(
    common.map(orjson.dumps),
    near.map(lambda d: json.dumps(d).encode()),
    fields.map(lambda d: json.dumps(d).encode()),  # ints beyond 64 bits, escaped text
    fields.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=12),
    st.sampled_from([b"", b"[]", b"1", b'"x"', b"{", b"null", b'{"tenant":"acme"}',
                     b'{"tenant":"acme","deviceId":"d","seq":1,"ts":1767225600000,"type":"t","d":"\\ud800"}',
                     nested(MAX_NESTING - 2), nested(MAX_NESTING + 1), b"[" * 300 + b"]" * 300,
                     b'{"pad":"' + b"[" * 600 + b'","tenant":"acme","deviceId":"d","seq":1,'
                     b'"ts":1767225600000,"type":"t"}']),
    st.none(),
)
records = st.one_of(
    st.tuples(st.integers(0, 3), values).map(lambda pv: ("value", pv)),
    st.sampled_from([KafkaError._PARTITION_EOF, KafkaError._FATAL]).map(lambda code: ("error", code)),
)


def messages(recs: list[tuple[str, Any]]) -> list[Any]:
    offsets = [0] * 4
    out = []
    for kind, x in recs:
        if kind == "error":
            out.append(Message(topic="e", partition=0, offset=-1, error=KafkaError(x)))
            continue
        p, value = x
        out.append(Message(topic="e", partition=p, offset=offsets[p], key=b"k", value=value,
                           timestamp=(1, 5)))
        offsets[p] += 1
    return out


def same(a: Any, b: Any) -> None:
    assert len(a.items) == len(b.items)
    for x, y in zip(a.items, b.items, strict=True):
        assert x[0] is y[0]  # the very message
        assert x[1:] == y[1:]
        assert [type(v) for v in x[1:]] == [type(v) for v in y[1:]]
    assert (a.keys, a.partitions, a.offsets, a.skipped) == (b.keys, b.partitions, b.offsets, b.skipped)
    assert (a.fatal is None) == (b.fatal is None)
    if a.fatal is not None:
        assert a.fatal.code() == b.fatal.code()


@settings(max_examples=500, deadline=None)
@given(st.lists(records, max_size=30), st.booleans())
def test_native_decode_equals_the_pure_python_path(recs: list[tuple[str, Any]], dedup: bool) -> None:
    msgs = messages(recs)
    key_of = dedup_keys("p", TENANT) if dedup else None
    parts = dedup_key_parts("p", TENANT)
    want = decode_batch_py(msgs, TENANT, None, key_of, NOW_MS, SKEW_MS)
    got = decode_batch(msgs, TENANT, None, key_of, NOW_MS, SKEW_MS, None, parts)
    same(want, got)


def test_the_native_path_runs_and_its_keys_are_the_pinned_ones() -> None:
    """Not a silent fallback: the native function itself decodes a common event, with the key
    redis_state pins (blake2b of 12 bytes over tenant \\x1f deviceId \\x1f seq)."""
    assert native.decode_common is not None and native.NATIVE
    ev = {"tenant": TENANT, "deviceId": "dé", "seq": 2**63 - 1, "ts": NOW_MS, "type": "t"}
    msg = Message(topic="e", partition=2, offset=7, value=orjson.dumps(ev))
    head, scope = dedup_key_parts("p", TENANT)

    def slow(_: Any) -> tuple[None, None]:
        raise AssertionError("a common event went the Python path")

    items, keys, ps, offs = native.decode_common([msg], TENANT, NOW_MS, head, scope, orjson.loads, slow)
    assert items == [(msg, 2, 7, ev, "dé", 2**63 - 1, NOW_MS)]
    digest = hashlib.blake2b(b"acme\x1fd\xc3\xa9\x1f9223372036854775807", digest_size=12).digest()
    assert keys == [b"p:ev:" + digest] and ps == [2] and offs == [7]
