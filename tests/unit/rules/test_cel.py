"""The CEL subset: parsing, compile-time checks with columns, run-time semantics (missing data)."""

from __future__ import annotations

import pytest

from alertpipe.workers.rules.cel import AGGREGATE_ENV, MISSING, CelError, compile_expression

pytestmark = pytest.mark.unit

EVENT = {
    "tenant": "acme",
    "deviceId": "d-1",
    "seq": 7,
    "type": "cpu",
    "value": 91.5,
    "n": 3,
    "region": "eu-west-1",
    "tags": ["a", "b"],
    "meta": {"rack": {"row": 4}, "name": "srv"},
    "ok": True,
    "s": "12",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("value > 80", True),
        ("value > 80 && type == 'cpu'", True),
        ("value > 95 || n == 3", True),
        ("!(value > 80)", False),
        ("n + 2 == 5 && n * 2 == 6 && n - 4 == -1", True),
        ("7 / 2 == 3 && -7 / 2 == -3 && 7 % 3 == 1 && -7 % 3 == -1", True),
        ("value / 2.0 > 45.0", True),
        ("'a' + 'b' == 'ab'", True),
        ("region.startsWith('eu') && region.endsWith('-1') && region.contains('west')", True),
        ("region.matches('^eu-[a-z]+-[0-9]$')", True),
        ("matches(region, 'us')", False),
        ("type in ['cpu', 'mem']", True),
        ("type in ['disk']", False),
        ("'a' in tags", True),
        ("size(tags) == 2 && tags.size() == 2 && size('abc') == 3", True),
        ("meta.rack.row == 4 && meta['name'] == 'srv' && tags[1] == 'b'", True),
        ("has(meta.rack) && !has(meta.nothing) && has(value) && !has(nothing)", True),
        ("int(s) == 12 && double(s) == 12.0 && string(n) == '3' && int(value) == 91", True),
        ("ok", True),
        ("ok && value > 1", True),
        ("n > 2 ? value > 90 : false", True),
        ("1 < 2.5 && 3 == 3.0", True),
        ("0x10 == 16", True),
        ("'\\u00e9' == 'é'", True),
        ("null == null", True),
    ],
)
def test_evaluates(expr: str, expected: bool) -> None:
    assert compile_expression(expr)(EVENT) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "missing > 1",
        "missing < 1",
        "missing == 1",
        "missing != 1",
        "missing + 1 > 0",
        "missing.a.b == 1",
        "size(missing) == 0",
        "missing.startsWith('a')",
        "int(missing) == 1",
        "meta.nothing.deeper == 1",
        "tags[9] == 'x'",
        "meta['nope'] == 1",
        "missing in [1, 2]",
    ],
)
def test_missing_fields_make_comparisons_false(expr: str) -> None:
    assert compile_expression(expr)(EVENT) is False


@pytest.mark.parametrize(
    "expr",
    [
        "region > 5",  # dyn at compile time, a string at run time
        "n / 0 == 1",
        "int('abc') == 1",
        "region * 2 == 1",
        "size(n) == 1",
    ],
)
def test_runtime_errors_are_false_not_exceptions(expr: str) -> None:
    assert compile_expression(expr)(EVENT) is False


def test_negation_of_a_missing_comparison_is_true() -> None:
    # documented: the comparison is false, and ! negates it
    assert compile_expression("!(missing > 1)")(EVENT) is True
    assert compile_expression("has(missing) && missing > 1")(EVENT) is False


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("avgg(value) > 1", "unknown function 'avgg' at column 1"),
        ("value >", "unexpected end of expression at column 8"),
        ("(value > 1", "expected ')' but found end of expression at column 11"),
        ("deviceId > 5", "no matching overload for '>' applied to (string, int) at column 10"),
        ("seq == 'x'", "no matching overload for '==' applied to (int, string) at column 5"),
        ("1 + 'a' == 2", "no matching overload for '+' applied to (int, string) at column 3"),
        ("region.matches(type)", "matches() needs a string literal pattern at column 8"),
        ("region.matches('(a')", "matches() pattern is invalid"),
        ("region.matches('(a)\\\\1')", "back-references or look-around"),
        ("value", None),  # dyn: allowed, true only when the field is true
        ("5", "the expression must be a bool, but it is an int"),
        ("'a' in [1, 2]", "'in' compares a string with a list of int at column 5"),
        ("size(1, 2) == 1", "size() takes 1 argument (2 given) at column 1"),
        ("value > 1 $", "unexpected character '$' at column 11"),
        ("x.", "expected a field name after '.' at column 3"),
        ("{'a': 1}", "map literals are not supported at column 1"),
        ("while", "'while' is a reserved word at column 1"),
        ("has(1)", "has() needs a field selection"),
        ("!5", "'!' needs a bool, not int, at column 1"),
        ("1 && true", "'&&' needs bool operands, not int"),
    ],
)
def test_compile_errors(expr: str, reason: str | None) -> None:
    if reason is None:
        compile_expression(expr)
        return
    with pytest.raises(CelError) as info:
        compile_expression(expr)
    assert reason in info.value.reason


def test_every_error_is_reported() -> None:
    with pytest.raises(CelError) as info:
        compile_expression("foo(1) && bar(2) && deviceId > 1")
    assert info.value.reason.split("; ") == [
        "unknown function 'foo' at column 1",
        "unknown function 'bar' at column 11",
        "no matching overload for '>' applied to (string, int) at column 30",
    ]


def test_aggregate_env_sees_the_window_facts_only() -> None:
    prog = compile_expression("value > 75", AGGREGATE_ENV)
    assert prog(80.0) is True and prog(75.0) is False and prog(MISSING) is False
    assert prog.names == {"value"}
    floor = compile_expression("value > 75.0 && count >= 3", AGGREGATE_ENV)
    assert floor(80.0, 3) is True and floor(80.0, 2) is False and floor.names == {"value", "count"}
    late = compile_expression("windowEnd - windowStart == 60000 && windowEnd > 10", AGGREGATE_ENV)
    assert late(MISSING, 0, 0, 60_000) is True and late(1.0, 1, 5, 60_000) is False
    with pytest.raises(CelError, match="undeclared reference 'deviceId' at column 14") as exc:
        compile_expression("value > 1 && deviceId == 'x'", AGGREGATE_ENV)
    assert "sees only: value, count, windowStart, windowEnd" in str(exc.value)
    with pytest.raises(CelError, match=r"applied to \(int, string\)"):
        compile_expression("count == 'x'", AGGREGATE_ENV)
    with pytest.raises(CelError, match=r"applied to \(double, string\)"):
        compile_expression("value == 'x'", AGGREGATE_ENV)


def test_size_caps() -> None:
    with pytest.raises(CelError, match="longer than 4096"):
        compile_expression("a == 1 && " * 500 + "true")
    with pytest.raises(CelError, match="too large"):
        compile_expression(" && ".join(["a == 1"] * 200))
    with pytest.raises(CelError, match="nested too deeply"):
        compile_expression("(" * 60 + "true" + ")" * 60)
    with pytest.raises(CelError, match="longer than 256"):
        compile_expression(f"a.matches('{'x' * 300}')")
    long_text = {"a": "x" * 5000}
    assert compile_expression("a.matches('x')")(long_text) is False  # input over the cap: false


def test_generated_code_never_contains_user_text_outside_literals() -> None:
    prog = compile_expression("__import__ == 'os' || a.__class__ == 1")
    # identifiers become dictionary keys, never Python names
    assert "e.get('__import__', _M)" in prog.source
    assert prog({"__import__": "os"}) is True
    assert prog({"a": {"__class__": 1}}) is True
    assert prog({"a": 1}) is False


def test_fields_are_collected() -> None:
    assert compile_expression("value > 1 && meta.x == 2 && has(flag)").fields == {"value", "meta", "flag"}
