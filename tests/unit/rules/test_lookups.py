"""lookup('table', key) in rules: compile-time checks with the field path, the missing-row semantics,
and the engine reading rows from an in-memory LookupView (what the evaluator's cache fills)."""

from __future__ import annotations

from typing import Any

import pytest

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.rules import compile_expression, compile_rule
from alertpipe.workers.rules.cel import CelError
from alertpipe.workers.rules.engine import Engine, EngineSettings
from alertpipe.workers.rules.lookups import LookupTables, lookup_key, lookup_keys
from alertpipe.workers.rules.testing import run_rule_tests

from .helpers import ev, feed, rule

pytestmark = pytest.mark.unit

TABLES: dict[str, dict[str, dict[str, Any]]] = {
    "thresholds": {"d1": {"max": 50}, "d2": {"max": 90.5}, "7": {"max": 1}},
    "maintenance": {"d1": {"until": 2_000_000_000_000}},
}


def run_with(tables: LookupTables, rules: list[Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    engine = Engine(EngineSettings("acme", "main", 5000), rules, clock=lambda: 0.0, lookups=tables)
    part = engine.partition(0)
    feed(part, events)
    part.flush()
    return part.take_alerts()


# --- the expression ----------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "event", "expected"), [
    ("value > lookup('thresholds', deviceId).max", {"deviceId": "d1", "value": 51}, True),
    ("value > lookup('thresholds', deviceId).max", {"deviceId": "d1", "value": 50}, False),
    ("value > lookup('thresholds', deviceId).max", {"deviceId": "d2", "value": 90}, False),
    # no such key, no such table, a key missing from the event, a key of another type: missing row,
    # and every comparison with what it holds is false (also !=)
    ("value > lookup('thresholds', deviceId).max", {"deviceId": "d9", "value": 1e9}, False),
    ("value <= lookup('thresholds', deviceId).max", {"deviceId": "d9", "value": 1}, False),
    ("lookup('thresholds', deviceId).max != 3", {"deviceId": "d9"}, False),
    ("value > lookup('nosuch', deviceId).max", {"deviceId": "d1", "value": 1e9}, False),
    ("value > lookup('thresholds', site).max", {"deviceId": "d1", "value": 1e9}, False),
    ("value > lookup('thresholds', tags).max", {"deviceId": "d1", "tags": ["d1"], "value": 1e9}, False),
    # an int key reads the row of its decimal text
    ("value > lookup('thresholds', rack).max", {"rack": 7, "value": 2}, True),
    # has() tells a row (field) from none; ! of a false comparison is true
    ("has(lookup('thresholds', deviceId).max)", {"deviceId": "d1"}, True),
    ("has(lookup('thresholds', deviceId).max)", {"deviceId": "d9"}, False),
    ("!(lookup('maintenance', deviceId).until > ts)", {"deviceId": "d1", "ts": 1_999_999_999_999}, False),
    ("!(lookup('maintenance', deviceId).until > ts)", {"deviceId": "d1", "ts": 2_000_000_000_000}, True),
    ("!(lookup('maintenance', deviceId).until > ts)", {"deviceId": "d2", "ts": 0}, True),
    # a key computed from fields; a row field of the wrong type makes the expression false
    ("value > lookup('thresholds', 'd' + string(n)).max", {"n": 2, "value": 91}, True),
    ("lookup('thresholds', deviceId).max.startsWith('5')", {"deviceId": "d1"}, False),
])
def test_lookup_expression(expr: str, event: dict[str, Any], expected: bool) -> None:
    prog = compile_expression(expr)
    assert prog(event, LookupTables(TABLES)) is expected
    if expected:  # without a view every row is absent
        assert prog(event) is (expr.startswith("!") and expected)


def test_a_program_lists_its_lookups_with_key_functions() -> None:
    prog = compile_expression("value > lookup('thresholds', deviceId).max && !has(lookup('mute', site).on)")
    assert [r.table for r in prog.lookups] == ["thresholds", "mute"]
    assert [r.key({"deviceId": "d1", "site": "berlin"}) for r in prog.lookups] == ["d1", "berlin"]
    assert lookup_key(prog.lookups[1].key({"deviceId": "d1"})) is None  # site missing: no key
    assert lookup_key(7) == "7" and lookup_key(True) is None and lookup_key(1.5) is None


@pytest.mark.parametrize(("expr", "message"), [
    ("lookup('thresholds').max > 1", "lookup() takes a table name and a key"),
    ("lookup('a', deviceId, 3).max > 1", "lookup() takes a table name and a key"),
    ("deviceId.lookup('a').max > 1", "lookup() takes a table name and a key"),
    ("lookup(table, deviceId).max > 1", "lookup() needs the table as a string literal"),
    ("lookup('a:b', deviceId).max > 1", "'a:b' is not a table name"),
    ("lookup('t', lookup('u', deviceId).k).max > 1", "the key of lookup() cannot itself read lookup()"),
    ("lookup('t', true).max > 1", "the key of lookup() must be a string or an int, not bool"),
    ("lookup('t', 1.5).max > 1", "the key of lookup() must be a string or an int, not double"),
    ("lookup('t', deviceId)", "the expression must be a bool, but it is a map"),
    ("lookup('t', deviceId) > 5", "no matching overload for '>' applied to (map, int)"),
])
def test_a_bad_lookup_call_is_refused_with_its_column(expr: str, message: str) -> None:
    with pytest.raises(CelError) as exc:
        compile_expression(expr)
    assert message in exc.value.reason
    assert "column" in exc.value.reason or "must be a bool" in exc.value.reason


def compile_errors(**spec: Any) -> list[tuple[str, str]]:
    with pytest.raises(RuleCompileError) as exc:
        compile_rule("r", RuleSpec.model_validate(spec), tables=spec.pop("_tables", None))
    return list(exc.value.errors)


def test_compile_errors_carry_the_field_path() -> None:
    errors = compile_errors(threshold={"condition": "value > lookup(t, deviceId).max"})
    assert errors == [("spec.threshold.condition",
                       "lookup() needs the table as a string literal, e.g. lookup('thresholds', deviceId),"
                       " at column 9")]
    errors = compile_errors(select={"filter": "lookup('x').on == true"}, threshold={"condition": "value > 1"})
    assert [p for p, _ in errors] == ["spec.select.filter"]
    # an aggregate condition sees the window, not the event
    errors = compile_errors(aggregate={"fn": "avg", "field": "value", "window": "1m",
                                       "condition": "value > lookup('thresholds', deviceId).max"})
    assert errors[0][0] == "spec.aggregate.condition"
    assert "lookup() needs the event: it is available in select.filter and threshold.condition" \
        in errors[0][1]


def test_tables_the_pipeline_does_not_declare_are_refused() -> None:
    spec = RuleSpec.model_validate({"threshold": {"condition": "value > lookup('limits', deviceId).max"}})
    with pytest.raises(RuleCompileError) as exc:
        compile_rule("r", spec, tables=["thresholds", "maintenance"])
    assert exc.value.errors == [("spec.threshold.condition",
                                 "lookup('limits', ...) at column 9: table 'limits' is not declared in the"
                                 " pipeline's spec.lookups.tables (maintenance, thresholds)")]
    assert compile_rule("r", spec, tables=["limits"]).tables == {"limits"}
    assert compile_rule("r", spec).tables == {"limits"}  # no list: any table


def test_a_condition_lookup_in_a_rule_spanning_devices_is_refused_but_a_filter_one_is_not() -> None:
    errors = compile_errors(by=["site"], threshold={"condition": "value > lookup('t', site).max"})
    assert errors == [("spec.threshold.condition",
                       "lookup() in the condition of a rule whose groups span devices (spec.by without"
                       " deviceId) is not supported; use it in spec.select.filter")]
    ok = rule("r", by=["site"], select={"filter": "lookup('sites', site).enabled == true"},
              aggregate={"fn": "count", "window": "1m", "condition": "value > 3"})
    assert ok.tables == {"sites"}


# --- the engine --------------------------------------------------------------------------------


PER_DEVICE = rule("over", select={"types": ["cpu"]},
                  threshold={"condition": "value > lookup('thresholds', deviceId).max"})
MAINTENANCE = rule("hot-unless-maintenance", select={"types": ["cpu"]},
                   threshold={"condition": "value > 80 && !(lookup('maintenance', deviceId).until > ts)"})


def test_each_device_fires_over_its_own_threshold_only() -> None:
    tables = LookupTables(TABLES)
    events = [ev("d1", 0, 0, value=60), ev("d2", 0, 0, value=60), ev("d3", 0, 0, value=60),
              ev("d2", 1, 1, value=95)]
    alerts = run_with(tables, [PER_DEVICE], events)
    assert [(a["groupKey"], a["status"], a["eventTimeMs"] - events[0]["ts"]) for a in alerts] == [
        ("deviceId=d1", "firing", 0), ("deviceId=d2", "firing", 1000)]  # d3 has no row: never fires


def test_a_changed_row_applies_to_the_events_released_after_the_change() -> None:
    tables = LookupTables(TABLES)
    engine = Engine(EngineSettings("acme", "main", 5000), [PER_DEVICE], clock=lambda: 0.0, lookups=tables)
    part = engine.partition(0)
    first = ev("d1", 0, 0, value=60)
    feed(part, [first])
    part.advance_to(first["ts"])  # a device's first event waits the lateness bound
    assert [a["status"] for a in part.take_alerts()] == ["firing"]
    tables.put("thresholds", "d1", {"max": 70})
    feed(part, [ev("d1", 1, 1, value=65)])  # now under its threshold: resolves
    assert [a["status"] for a in part.take_alerts()] == ["resolved"]


def test_maintenance_window_mutes_the_device_until_it_ends() -> None:
    until = ev("d1", 0, 10)["ts"]
    tables = LookupTables({"maintenance": {"d1": {"until": until}}})
    events = [ev("d1", 0, 5, value=95), ev("d2", 0, 5, value=95), ev("d1", 1, 12, value=95)]
    alerts = run_with(tables, [MAINTENANCE], events)
    assert sorted((a["eventTimeMs"], a["groupKey"]) for a in alerts) == [
        (events[1]["ts"], "deviceId=d2"), (events[2]["ts"], "deviceId=d1")]


def test_filter_lookups_select_events_and_lookup_keys_names_what_to_fetch() -> None:
    muted = rule("r", select={"types": ["cpu"], "filter": "!(lookup('muted', site).on == true)"},
                 threshold={"condition": "value > 80"})
    assert muted.tables == {"muted"}
    tables = LookupTables({"muted": {"rome": {"on": True}}})
    events = [ev("d1", 0, 0, value=95, site="rome"), ev("d2", 0, 0, value=95, site="paris")]
    assert [a["groupKey"] for a in run_with(tables, [muted], events)] == ["deviceId=d2"]
    # what the evaluator prefetches: per event type of the rules that read tables
    batch = [*events, ev("d3", 0, 0, typ="mem", site="oslo"), {"deviceId": "d4", "type": "cpu"}]
    assert lookup_keys([muted, PER_DEVICE, rule("plain", threshold={"condition": "value > 1"})], batch) == {
        ("muted", "rome"), ("muted", "paris"), ("thresholds", "d1"), ("thresholds", "d2"),
        ("thresholds", "d4")}


def test_rule_tests_carry_their_lookup_rows() -> None:
    spec = RuleSpec.model_validate({
        "select": {"types": ["cpu"]},
        "threshold": {"condition": "value > lookup('thresholds', deviceId).max"},
        "tests": [{"name": "per device", "lookups": {"thresholds": {"d1": {"max": 50}}},
                   "events": [{"deviceId": "d1", "ts": "2026-01-01T00:00:00Z", "value": 60},
                              {"deviceId": "d2", "ts": "2026-01-01T00:00:00Z", "value": 60}],
                   "expect": [{"status": "firing", "groupKey": "deviceId=d1"}]},
                  {"name": "without rows nothing fires",
                   "events": [{"deviceId": "d1", "ts": "2026-01-01T00:00:00Z", "value": 60}], "expect": []}],
    })
    assert [(r.ok, r.message) for r in run_rule_tests("over", spec)] == [
        (True, "1 transition(s) as expected"), (True, "0 transition(s) as expected")]
