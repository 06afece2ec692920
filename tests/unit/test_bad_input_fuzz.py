"""Fuzz tests of the two front doors for user input: the event codec (bytes from Kafka or an HTTP
body) and rule compilation (AlertRule manifests from YAML). Whatever comes in: no crash, no hang
(nesting is bounded), and a refusal is one line that names what to fix."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.events import (
    EventError,
    ahead_reason,
    decode_event,
    event_from_obj,
    nesting_reason,
    parse_ts_ms,
)
from alertpipe.workers.ingestor.body import BodyError, build_batch, parse_body
from alertpipe.workers.rules import compile_rule
from alertpipe.workers.rules.cel_syntax import MAX_DEPTH
from alertpipe.workers.rules.compiler import rule_from_manifest
from alertpipe.workers.rules.engine import Engine, EngineSettings

pytestmark = pytest.mark.unit

NOW = 1_767_323_045_000
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["acme", "2026-01-02T03:04:05Z", "", "1e400", "NaN", NOW])
)
trees: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)
event_like = st.fixed_dictionaries(
    {},
    optional={k: trees for k in ("tenant", "deviceId", "seq", "ts", "type", "value")},
)


def _one_line(msg: str) -> None:
    assert msg and "\n" not in msg and len(msg) < 600, msg


def _nested(depth: int) -> bytes:
    return b'{"tenant":"acme","deviceId":"d","seq":1,"ts":%d,"type":"t","v":' % NOW + b"[" * depth \
        + b"]" * depth + b"}"


# --- the event codec ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | trees.map(lambda t: json.dumps(t).encode()))
def test_decode_event_returns_an_event_or_one_line_reason(raw: bytes) -> None:
    try:
        ev = decode_event(raw, "acme")
    except EventError as exc:
        _one_line(str(exc))
        return
    assert ev.tenant == "acme" and 0 < len(ev.device_id) <= 256 and ev.seq >= 0


@settings(max_examples=300, deadline=None)
@given(obj=event_like)
def test_event_from_obj_accepts_or_names_the_field(obj: dict[str, Any]) -> None:
    # Python values (rule tests from YAML) may hold NaN and infinities that JSON cannot
    try:
        ev = event_from_obj(obj, "acme")
    except EventError as exc:
        _one_line(str(exc))
        return
    assert ev.data is obj and isinstance(ev.ts_ms, int)


@pytest.mark.parametrize(
    "ts", [math.nan, math.inf, -math.inf, 1e300, -1.0, True, [NOW], "9999-12-31T00:00:00Z"]
)
def test_non_finite_and_absurd_timestamps_are_event_errors(ts: Any) -> None:
    with pytest.raises(EventError) as exc:
        parse_ts_ms(ts)
    _one_line(str(exc.value))


def test_deep_nesting_is_bounded_and_explained() -> None:
    assert decode_event(_nested(200), "acme").seq == 1  # within orjson's limits: a fine event
    with pytest.raises(EventError, match="nested more than 254 levels"):  # decodes, cannot re-encode
        decode_event(_nested(300), "acme")
    assert nesting_reason(b'{"v": "' + b"[" * 1000 + b'"}') is None  # brackets in a string are text
    for depth in (2000, 100_000):  # orjson stops at 1024 levels without recursing
        with pytest.raises(EventError, match="depth limit"):
            decode_event(_nested(depth), "acme")
    # the ingestor re-encodes what it accepts: past orjson's 254 levels the event is refused alone
    items, _ = parse_body(b"[" + _nested(300) + b"]", "application/json")
    batch = build_batch(items, None, "acme", NOW)
    assert not batch.records and "nested more than 254 levels" in batch.rejects[0].reason
    with pytest.raises(BodyError, match="more than 1024 levels"):
        parse_body(b"[" + _nested(5000) + b"]", "application/json")


def test_the_ingestor_refuses_huge_and_future_events_alone() -> None:
    ok = {"tenant": "acme", "deviceId": "d", "seq": 1, "ts": NOW, "type": "t"}
    items = [ok, ok | {"blob": "x" * 600_000}, ok | {"ts": NOW + 3_600_000}, ok | {"ts": NOW + 60_000}]
    batch = build_batch(items, None, "acme", NOW, max_event_bytes=524_288, max_future_skew_ms=300_000)
    assert batch.indexes == [0, 3]
    big, ahead = batch.rejects
    assert big.index == 1 and "over the limit of 524288" in big.reason and "maxEventBytes" in big.reason
    assert ahead.index == 2 and "3600s ahead of the ingestor's clock" in ahead.reason
    assert "maxFutureSkew" in ahead.reason
    for r in batch.rejects:
        _one_line(r.reason)
    assert ahead_reason(NOW + 300_000, NOW, 300_000, "evaluator") is None


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (b'[{"value": NaN}]', "NaN and Infinity are not JSON"),
        (b'[{"value": -Infinity}]', "NaN and Infinity are not JSON"),
        (b'[{"value": 1e400}]', "NaN and Infinity are not JSON"),
        (b'[{"deviceId": "\xff\xfe"}]', "must be UTF-8"),
        (b'[{"deviceId": "\\ud800"}]', "surrogate"),
    ],
)
def test_bodies_that_are_not_json_say_what_to_send(body: bytes, hint: str) -> None:
    for ctype in ("application/json", "application/x-ndjson"):
        with pytest.raises(BodyError, match=hint) as exc:
            parse_body(body if ctype == "application/json" else body[1:-1], ctype)
        _one_line(str(exc.value))


# --- rule compilation ---------------------------------------------------------------------------

WORDS = ["select", "types", "filter", "threshold", "condition", "aggregate", "fn", "field", "window",
         "every", "absence", "for", "by", "severity", "labels", "annotations", "channels", "tests",
         "events", "expect", "name", "value", "avg", "p99", "count", "5s", "1m", "0s", "critical"]
CEL_BITS = ["value", "deviceId", " > ", " < ", " == ", "&&", "||", "!", "-", "(", ")", "[", "]", "{", "}",
            "1", "2.5", "'a'", "true", "null", ".", "size(", "in ", ",", ":", "?", "has(", "e", "\\"]
cel_text = st.lists(st.sampled_from(CEL_BITS), max_size=30).map("".join)
rule_trees: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 100) | st.sampled_from(WORDS) | cel_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(WORDS), inner, max_size=4),
    max_leaves=20,
)
manifests = st.fixed_dictionaries(
    {
        "kind": st.just("AlertRule"),
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(["r", "", 1])}),
    },
    optional={"spec": rule_trees | st.fixed_dictionaries(
        {"threshold": st.fixed_dictionaries({"condition": cel_text})},
        optional={"select": rule_trees, "by": rule_trees, "for": rule_trees, "annotations": rule_trees},
    )},
)


def _compile(doc: Any) -> None:
    """Compile a manifest and, when it compiles, run an event through it: nothing but a
    RuleCompileError may come out."""
    try:
        name, spec = rule_from_manifest(doc)
        rule = compile_rule(name, spec)
    except RuleCompileError as exc:
        assert exc.errors
        for path, reason in exc.errors:
            _one_line(f"{path}: {reason}")
        return
    part = Engine(EngineSettings("acme", "main", 5000), [rule], clock=lambda: 0.0).partition(0)
    for i, value in enumerate((1, "x", None, [1], {"a": 1}, 1.5)):
        event = {"tenant": "acme", "deviceId": "d", "seq": i, "ts": NOW + i, "type": "cpu", "value": value}
        part.offer(event, "d", i, NOW + i)
    part.flush()
    part.take_alerts()


@settings(max_examples=400, deadline=None)
@given(doc=manifests)
def test_arbitrary_rule_structures_compile_or_name_the_field(doc: dict[str, Any]) -> None:
    _compile(doc)


yaml_text = st.lists(
    st.sampled_from(["spec:", "threshold:", "condition:", " value > 1", "\n", "  ", "- ", "[", "]", "{",
                     "}", ":", "'", '"', "&a", "*a", "!!python/object", "? ", "|", ">", "#",
                     "kind: AlertRule", "metadata: {name: r}", ".nan", ".inf", "1e400", "\t"]),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=yaml_text)
def test_arbitrary_yaml_loads_or_fails_cleanly_then_compiles_or_fails_cleanly(text: str) -> None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    if isinstance(doc, dict):
        _compile({"kind": "AlertRule", "metadata": {"name": "r"}, "spec": doc.get("spec", doc)})


@pytest.mark.parametrize(
    "condition",
    ["(" * 3000 + "1" + ")" * 3000, "-" * 4000 + "1", "!" * 4000 + "true", "[" * 2000 + "]" * 2000,
     "value" + ".a" * 1000, "1" + " + 1" * 1000, "{" * 2000 + "}" * 2000, "'" + "x" * 5000 + "'"],
)
def test_deeply_nested_expressions_are_bounded(condition: str) -> None:
    doc = {"metadata": {"name": "r"}, "spec": {"threshold": {"condition": condition}}}
    with pytest.raises(RuleCompileError) as exc:
        name, spec = rule_from_manifest(doc)
        compile_rule(name, spec)
    _one_line(str(exc.value))
    reasons = ("nested too deeply", "too large", "at most 4096", "not supported")
    assert any(w in str(exc.value) for w in reasons)


def test_a_unary_run_within_the_bound_still_compiles() -> None:
    condition = "!" * (MAX_DEPTH - 1) + "(value > 1)"
    _, spec = rule_from_manifest({"metadata": {"name": "r"}, "spec": {"threshold": {"condition": condition}}})
    compile_rule("r", spec)


def test_rules_cli_reports_a_yaml_bomb_of_nesting_in_one_line(tmp_path: Path, capsys: Any) -> None:
    from alertpipe.workers.rules.cli import add_arguments, run

    f = tmp_path / "deep.yaml"
    f.write_text("spec: " + "[" * 5000 + "]" * 5000)
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["check", str(f)])
    assert run(args) == 1
    out = capsys.readouterr().out
    assert "nested too deeply" in out and "Traceback" not in out
