"""Type checking of rule expressions: fields used as two kinds in one expression are refused with
both places, and with declared field types every accepted expression runs without a type error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertpipe.workers.rules.cel import CelError, Env, compile_expression

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "message"), [
    ('value > 5 && value == "hot"', "'value' is used as a number at column 7 and as a string at column 20"),
    ('region == 5 && region.startsWith("eu")',
     "'region' is used as a number at column 8 and as a string at column 23"),
    ('a.b * 2 > 1 || !a.b', "'a.b' is used as a number at column 5 and as a bool at column 16"),
    ('value + 1 == "x"', "no matching overload for '==' applied to (number, string) at column 11"),
    ('temp * 2 > "a"', "no matching overload for '>' applied to (number, string) at column 10"),
    ('-s == "x"', "no matching overload for '==' applied to (number, string) at column 4"),
])
def test_a_field_used_as_two_kinds_is_refused_with_both_places(text: str, message: str) -> None:
    with pytest.raises(CelError) as exc:
        compile_expression(text)
    assert message in str(exc.value)


@pytest.mark.parametrize("text", [
    'value > 80 && value < 95.5', '(value - 1) % 2 == 0', 'int(value * 2) > 3', 'x == null || x > 3',
    'size(tags) > 2 && region.startsWith("eu")', 'has(a.b) && a.b > 1', 'name + "!" == "x!"',
    'value > "80"',  # a field compared with a string is a string comparison: fine on its own
])
def test_consistent_uses_compile(text: str) -> None:
    compile_expression(text)


# --- with declared types (an event schema): accepted means no type error at run time -------------

SCHEMA = Env(field_types=(("n", "double"), ("i", "int"), ("s", "string"), ("b", "bool")))
VALUES = {"n": st.floats(-1e6, 1e6, allow_nan=False), "i": st.integers(-1000, 1000),
          "s": st.text(max_size=8), "b": st.booleans()}
ATOMS = ["n", "i", "s", "b", "1", "2.5", '"x"', "true", "null"]
BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||"]


def exprs() -> st.SearchStrategy[str]:
    """Anything: most of it refused."""
    return st.recursive(
        st.sampled_from(ATOMS),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda x: f"!{x}"), inner.map(lambda x: f"-{x}"),
            st.tuples(st.sampled_from(["size", "int", "double", "string"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"),
            st.tuples(inner, st.sampled_from(["startsWith", "contains"]), inner).map(
                lambda t: f"{t[0]}.{t[1]}({t[2]})"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        ),
        max_leaves=6,
    )


def _f(fmt: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map(lambda t: fmt.format(*t))


# well-typed by construction (numbers, strings, bools), so that most of them are accepted
NUM: st.SearchStrategy[str] = st.deferred(lambda: st.one_of(
    st.sampled_from(["n", "i", "1", "2.5", "0"]),
    _f("({} {} {})", NUM, st.sampled_from(["+", "-", "*", "/"]), NUM), _f("(i % {})", NUM),
    _f("-{}", NUM), _f("int({})", st.one_of(NUM, STR)), _f("double({})", NUM), _f("size({})", STR),
    _f("({} ? {} : {})", BOOL, NUM, NUM)))
STR: st.SearchStrategy[str] = st.deferred(lambda: st.one_of(
    st.sampled_from(["s", '"x"', '""']), _f("({} + {})", STR, STR), _f("string({})", st.one_of(NUM, BOOL)),
    _f("({} ? {} : {})", BOOL, STR, STR)))
BOOL: st.SearchStrategy[str] = st.deferred(lambda: st.one_of(
    st.sampled_from(["b", "true"]), _f("({} {} {})", NUM, st.sampled_from(["<", ">=", "==", "!="]), NUM),
    _f("({} {} {})", STR, st.sampled_from(["<", "==", "!="]), STR), _f("({} && {})", BOOL, BOOL),
    _f("({} || {})", BOOL, BOOL), _f("!{}", BOOL), _f("{}.startsWith({})", STR, STR),
    _f("{}.contains({})", STR, STR), _f("({} ? {} : {})", BOOL, BOOL, BOOL)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(BOOL, exprs()), st.fixed_dictionaries(VALUES))
def test_with_declared_types_an_accepted_expression_never_fails_on_types(
    text: str, event: dict[str, Any]
) -> None:
    try:
        prog = compile_expression(text, SCHEMA, catch=False)
    except CelError:
        return
    try:
        prog(event)
    except (ZeroDivisionError, ValueError, OverflowError):
        pass  # division by zero and failed conversions are value errors, false at run time
