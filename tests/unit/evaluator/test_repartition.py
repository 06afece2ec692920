"""The repartition topic's records and decisions: routing, the wire format, when stage 1 sends a watermark."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.evaluator.repartition import (
    ForwardedEvent,
    RecordError,
    WatermarkRecord,
    WatermarkSender,
    decode_record,
    encode_event,
    encode_watermark,
    record_key,
    route,
    stage1_watermark,
)

pytestmark = pytest.mark.unit


def test_route_is_stable_in_range_and_spreads() -> None:
    keys = [record_key("site-hot", f"site=s{i}") for i in range(6000)]
    parts = [route(k, 6) for k in keys]
    assert parts == [route(k, 6) for k in keys]  # same key, same partition (every process)
    assert route(record_key("site-hot", "site=berlin"), 6) == 0  # golden: a change moves every group
    counts = Counter(parts)
    assert set(counts) == set(range(6)) and min(counts.values()) > 800


@given(st.text(min_size=1), st.text(), st.integers(1, 1000))
def test_route_property(rule: str, group: str, n: int) -> None:
    assert 0 <= route(record_key(rule, group), n) < n


def test_records_round_trip() -> None:
    e = {"deviceId": "d1", "seq": 7, "ts": 5, "site": "berlin", "value": 1.5}
    assert decode_record(encode_event(3, "site-hot", "abc", 5, None, e)) == ForwardedEvent(
        3, "site-hot", "abc", 5, None, e)
    assert decode_record(encode_watermark(2, 1000)) == WatermarkRecord(2, 1000)
    assert decode_record(encode_watermark(2, None)) == WatermarkRecord(2, None)


@pytest.mark.parametrize("raw", [
    None, b"", b"{", b'{"k": 1}', b"[]", b'["x"]', b"[1, 2]", b'[1, "2", 3]', b"[2, 0, 0]",
    b'[0, 1, "r", "fp", 5, null]', b'[0, 1, "r", "fp", 5, null, {"seq": 1}]',
    b'[0, 1, "r", "fp", "5", null, {"deviceId": "d", "seq": 1}]',
])
def test_malformed_records_are_named(raw: bytes | None) -> None:
    with pytest.raises(RecordError):
        decode_record(raw)


def test_stage1_watermark() -> None:
    # a partition that carried events sends its watermark, whatever its lag
    assert stage1_watermark(900, True, 50, 0, 30_000) == (True, 900)
    # one that never did: the idle mark once caught up and quiet for idleTimeout, nothing before
    assert stage1_watermark(0, False, 0, 30_000, 30_000) == (True, None)
    assert stage1_watermark(0, False, 0, 29_999, 30_000) == (False, None)
    assert stage1_watermark(0, False, 3, 60_000, 30_000) == (False, None)
    assert stage1_watermark(0, False, None, 60_000, 30_000) == (False, None)  # lag unknown: wait


def test_watermark_sender_sends_changes_at_once_and_the_rest_as_heartbeats() -> None:
    s = WatermarkSender(heartbeat_s=10)
    assert s.due(0, 100, now=0.0)
    assert not s.due(0, 100, now=5.0)
    assert s.due(0, 200, now=6.0)
    assert not s.due(0, 200, now=15.9)
    assert s.due(0, 200, now=16.0)
    assert s.due(1, None, now=16.0)
    s.forget(0)  # the partition was revoked; a later owner starts over
    assert s.due(0, 200, now=17.0)


def test_projection_keeps_what_stage_2_reads() -> None:
    from alertpipe.workers.config import RuleSpec
    from alertpipe.workers.evaluator.repartition import project, projection
    from alertpipe.workers.rules import compile_rule

    agg = compile_rule("a", RuleSpec.model_validate({
        "by": ["site", "meta.rack"], "select": {"filter": "region == 'eu'"},
        "aggregate": {"fn": "avg", "field": "value", "window": "1m", "condition": "value > 1.0"}}))
    silent = compile_rule("s", RuleSpec.model_validate({"by": ["site"], "absence": {"for": "1m"}}))
    hot = compile_rule("t", RuleSpec.model_validate({"by": ["site"], "threshold": {"condition": "value > 1"},
                                                     "annotations": {"summary": "{{ host }}"}}))
    e = {"tenant": "acme", "deviceId": "d", "seq": 3, "ts": 1, "type": "cpu", "region": "eu", "site": "b",
         "meta": {"rack": "r1", "row": 2}, "value": 5, "host": "h"}
    assert project(projection(agg), e) == {"deviceId": "d", "seq": 3, "site": "b",
                                           "meta": {"rack": "r1", "row": 2}, "value": 5}
    assert project(projection(silent), e) == {"deviceId": "d", "seq": 3, "site": "b"}
    assert projection(hot) is None and project(None, e) is e  # a threshold may read any field
