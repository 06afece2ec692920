"""Offline rule tests (``alertpipe rules test``): run an AlertRule's spec.tests through the engine.

Like promtool's rule tests: the same engine the worker runs, no Kafka or Redis. Each test's events
are fed in order to one partition (missing ``seq`` counts up per device, missing ``type`` is the
rule's first selected type, missing ``tenant`` is the test tenant), then the watermark is moved to
the last event time, and the transitions are compared with ``expect`` in event-time order. An
expected entry checks only the keys it names: ``status``, ``groupKey``, ``severity``, ``at``
(event time, RFC 3339 or epoch ms) and subsets of ``labels``, ``annotations`` and ``values``.
A test's ``lookups`` (``{table: {key: {field: value}}}``) are the rows its ``lookup()`` calls read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alertpipe.workers.config import RuleSpec, RuleTest
from alertpipe.workers.events import EventError, parse_ts_ms
from alertpipe.workers.rules.compiler import CompiledRule, compile_rule
from alertpipe.workers.rules.engine import Engine, EngineSettings
from alertpipe.workers.rules.lookups import LookupTables
from alertpipe.workers.rules.templates import render_value

__all__ = ["TestResult", "describe_alert", "run_rule_test", "run_rule_tests"]

TEST_TENANT = "test"
TEST_PIPELINE = "test"


@dataclass(frozen=True, slots=True)
class TestResult:
    rule: str
    test: str
    ok: bool
    message: str
    alerts: tuple[dict[str, Any], ...] = ()


def describe_alert(a: dict[str, Any]) -> str:
    return f"{a['status']} {a['groupKey']} at {a['eventTimeMs']} values={a['values']}"


def _events(rule: CompiledRule, test: RuleTest) -> list[tuple[dict[str, Any], str, int, int]]:
    seqs: dict[str, int] = {}
    out = []
    default_type = rule.types[0] if rule.types else "event"
    for i, raw in enumerate(test.events):
        d = dict(raw)
        d.setdefault("tenant", TEST_TENANT)
        d.setdefault("type", default_type)
        dev = str(d.get("deviceId", ""))
        seq = d.get("seq")
        if not isinstance(seq, int):
            seq = seqs.get(dev, 0)
            d["seq"] = seq
        seqs[dev] = max(seqs.get(dev, 0), seq + 1)
        try:
            ts = parse_ts_ms(d.get("ts"))
        except EventError as exc:
            raise ValueError(f"events[{i}]: {exc}") from None
        out.append((d, dev, seq, ts))
    return out


def _matches(exp: dict[str, Any], got: dict[str, Any]) -> str | None:
    """None when ``got`` satisfies ``exp``; else the first difference."""
    for key in ("status", "groupKey", "severity"):
        if key in exp and exp[key] != got[key]:
            return f"{key} is {got[key]!r}, expected {exp[key]!r}"
    if "at" in exp:
        try:
            at = parse_ts_ms(exp["at"])
        except EventError as exc:
            return f"at: {exc}"
        if at != got["eventTimeMs"]:
            return f"at is {got['eventTimeMs']}, expected {at}"
    for key in ("labels", "annotations", "values"):
        want = exp.get(key) or {}
        for k, v in want.items():
            have = got[key].get(k)
            if have != v and render_value(have) != render_value(v):
                return f"{key}.{k} is {have!r}, expected {v!r}"
    return None


def run_rule_test(rule: CompiledRule, test: RuleTest, lateness_ms: int = 5000) -> TestResult:
    engine = Engine(EngineSettings(TEST_TENANT, TEST_PIPELINE, lateness_ms), [rule], clock=lambda: 0.0,
                    lookups=LookupTables(test.lookups))
    part = engine.partition(0)
    try:
        events = _events(rule, test)
    except ValueError as exc:
        return TestResult(rule.name, test.name, False, str(exc))
    for d, dev, seq, ts in events:
        part.offer(d, dev, seq, ts)
    part.flush()
    alerts = sorted(part.take_alerts(), key=lambda a: a["eventTimeMs"])
    problems = []
    if len(alerts) != len(test.expect):
        problems.append(f"expected {len(test.expect)} alert transition(s), got {len(alerts)}")
    for i, (exp, got) in enumerate(zip(test.expect, alerts, strict=False)):
        diff = _matches(exp, got)
        if diff is not None:
            problems.append(f"expect[{i}]: {diff}")
    if problems:
        got_text = "; ".join(describe_alert(a) for a in alerts) or "none"
        return TestResult(rule.name, test.name, False, f"{'; '.join(problems)} (got: {got_text})",
                          tuple(alerts))
    return TestResult(rule.name, test.name, True, f"{len(alerts)} transition(s) as expected", tuple(alerts))


def run_rule_tests(name: str, spec: RuleSpec, lateness_ms: int = 5000) -> list[TestResult]:
    """Run every test of one rule (RuleCompileError when the rule does not compile)."""
    rule = compile_rule(name, spec)
    return [run_rule_test(rule, t, lateness_ms) for t in spec.tests]
