"""Property tests: no body, however broken, makes the parser or the checker raise anything unexpected."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.workers.ingestor.body import BodyError, build_batch, parse_body

pytestmark = pytest.mark.unit

CTYPES = st.sampled_from(
    ["", "application/json", "application/x-ndjson", "text/plain", "application/json; x=1"]
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
event = st.fixed_dictionaries(
    {
        "tenant": st.just("acme"),
        "deviceId": st.text(min_size=1, max_size=12),
        "seq": st.integers(min_value=0, max_value=2**62),
        "ts": st.integers(min_value=946_684_800_000, max_value=7_258_118_399_999),
        "type": st.text(min_size=1, max_size=12),
    },
    optional={"value": json_values},
)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300), ctype=CTYPES)
def test_arbitrary_bytes_parse_or_raise_body_error(body: bytes, ctype: str) -> None:
    try:
        items, lines = parse_body(body, ctype)
    except BodyError as exc:
        assert "\n" not in str(exc)
        return
    batch = build_batch(items, lines, "acme", 1_767_323_045_000)
    assert len(batch.records) + len(batch.rejects) == len(items)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(json_values | event, max_size=20))
def test_every_item_is_accepted_or_rejected_once_in_order(items: list[Any]) -> None:
    batch = build_batch(orjson.loads(orjson.dumps(items)), None, "acme", 1_767_323_045_000)
    seen = sorted(batch.indexes + [r.index for r in batch.rejects])
    assert seen == list(range(len(items)))
    assert batch.indexes == sorted(batch.indexes)


@settings(max_examples=100, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=20))
def test_array_and_ndjson_agree(events: list[dict[str, Any]]) -> None:
    arr = parse_body(orjson.dumps(events), "application/json")
    nd = parse_body(b"\n".join(orjson.dumps(e) for e in events), "application/x-ndjson")
    a = build_batch(arr[0], arr[1], "acme", 1)
    b = build_batch(nd[0], nd[1], "acme", 1)
    assert a.records == b.records and not a.rejects and len(a.records) == len(events)


near_events = st.fixed_dictionaries(
    {},
    optional={
        "tenant": st.sampled_from(["acme", "other", "", 1, None]),
        "deviceId": st.one_of(
            st.text(max_size=3), st.text(min_size=255, max_size=258), st.integers(), st.none()
        ),
        "seq": st.one_of(
            st.integers(min_value=-2, max_value=2**63 - 1), st.booleans(), st.floats(), st.text()
        ),
        "ts": st.one_of(
            st.integers(min_value=946_684_799_998, max_value=946_684_800_002),
            st.integers(min_value=7_258_118_399_998, max_value=7_258_118_400_002),
            st.integers(), st.booleans(), st.floats(allow_nan=False), st.just("2026-01-02T03:04:05Z"),
        ),
        "type": st.one_of(st.text(max_size=2), st.text(min_size=127, max_size=130), st.integers()),
    },
)


@settings(max_examples=300, deadline=None)
@given(obj=near_events)
def test_fast_path_accepts_only_what_event_from_obj_accepts(obj: dict[str, Any]) -> None:
    from alertpipe.workers.events import EventError, event_from_obj
    from alertpipe.workers.ingestor.body import _fast_device_id

    fast = _fast_device_id(obj, "acme")
    try:
        slow: str | None = event_from_obj(obj, "acme").device_id
    except EventError:
        slow = None
    if fast is not None:
        assert fast == slow
    if slow is not None and obj["ts"].__class__ is int and obj["seq"].__class__ is int:
        assert fast == slow  # the common shape takes the fast path
