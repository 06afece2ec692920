"""A CEL subset for rule filters and conditions: parsed, type-checked and compiled once to Python.

Hand-written rather than an existing CEL package because the evaluator runs every rule condition
on every matching event at 150k events/s: cel-python (the pure-Python CEL on PyPI) is a tree-walking
interpreter that took ~550 µs per evaluation of ``value > 80 && type == "cpu"`` on this machine,
activation prebuilt, and milliseconds with the JSON conversion, against 0.3-1.6 µs for the function
compiled here: three orders of magnitude (bench/evaluator/cel_compare.py, cel_compare.json).
Compiling also rejects unknown functions, undeclared names and ill-typed comparisons when the
AlertRule is applied, with a column for each error.

Supported (see docs/rules.md): literals (int, double, string, bool, null, lists), field access
(``a``, ``a.b``, ``a["k"]``, ``a[0]``), ``has(a.b)``, ``+ - * / %``, ``== != < <= > >=``,
``&& || !``, ``c ? a : b``, ``x in [..]``, ``size``, ``startsWith``, ``endsWith``, ``contains``,
``matches`` (literal pattern, length-capped), ``int()``, ``double()``, ``string()``, and
``lookup('table', key)`` (a row of a lookup table, see lookups.py).

Semantics of missing data: a missing field is a *missing* value. Every comparison involving it is
false (also ``!=``), arithmetic on it stays missing, ``has()`` tests for it. A run-time type error
(a field of an unexpected type, division by zero, a failed conversion) makes the whole expression
false: the rule does not match that event, the worker never crashes.

Safety: the Python code is generated from our own AST only; user text reaches it only as
``repr()`` of literals. No loops or comprehensions exist in the language, the expression is capped
at 4096 characters and 400 nodes, and regular expressions are literal, capped and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alertpipe.workers.rules.cel_runtime import _ERRORS, _RUNTIME, MISSING
from alertpipe.workers.rules.cel_syntax import (
    MAX_EXPR_CHARS,
    MAX_NODES,
    Binary,
    Call,
    CelError,
    Cond,
    Ident,
    Index,
    ListLit,
    Lit,
    Node,
    Select,
    Unary,
    parse,
)
from alertpipe.workers.rules.cel_types import _NUMERIC, _arith, _compatible, _lit_type, _regex
from alertpipe.workers.rules.lookups import NO_LOOKUPS, LookupRef, gen_lookup

__all__ = [
    "MAX_EXPR_CHARS",
    "MAX_NODES",
    "MISSING",
    "CelError",
    "CelProgram",
    "compile_expression",
    "parse",
]

# --- checker and code generator ----------------------------------------------------------------

# what a field of unknown type is used as, by the type of what it meets
_KIND = {"int": "number", "double": "number", "number": "number", "string": "string", "bool": "bool"}
_STRING_FUNCTIONS = {"startsWith", "endsWith", "contains", "matches"}
EVENT_FIELD_TYPES = {"tenant": "string", "deviceId": "string", "type": "string", "seq": "int"}


@dataclass(frozen=True, slots=True)
class Env:
    """What names mean: event fields (``e.get``) or declared variables with a type."""

    event_fields: bool = True
    variables: tuple[tuple[str, str, str], ...] = ()  # (name, python name, type)
    field_types: tuple[tuple[str, str], ...] = tuple(EVENT_FIELD_TYPES.items())


EVENT_ENV = Env()
# An aggregate condition is called as ``fn(value, count, windowStart, windowEnd)``: the window's
# aggregate, how many values it holds, and its bounds in epoch milliseconds.
AGGREGATE_ENV = Env(event_fields=False, variables=(
    ("value", "v", "double"), ("count", "n", "int"), ("windowStart", "ws", "int"), ("windowEnd", "we", "int"),
))


@dataclass(slots=True)
class _Gen:
    env: Env
    consts: dict[str, Any] = field(default_factory=dict)
    fields: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # declared variables the expression reads
    uses: dict[str, tuple[str, int]] = field(default_factory=dict)  # field -> (kind, column) first seen
    errors: list[str] = field(default_factory=list)
    tmp: int = 0
    lookups: list[tuple[str, str, int]] = field(default_factory=list)  # (table, key code, column)

    def const(self, value: Any) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def err(self, msg: str) -> tuple[str, str]:
        self.errors.append(msg)
        return "_M", "dyn"

    def field_path(self, n: Node) -> str | None:
        """``a`` or ``a.b.c`` when ``n`` reads an event field (of a type nobody declared)."""
        if isinstance(n, Ident):
            if not self.env.event_fields or any(v[0] == n.name for v in self.env.variables):
                return None
            return None if n.name in dict(self.env.field_types) else n.name
        if isinstance(n, Select):
            base = self.field_path(n.operand)
            return None if base is None else f"{base}.{n.field}"
        return None

    def use(self, n: Node, typ: str, col: int) -> None:
        """Field ``n`` of unknown type meets a ``typ``: one expression uses a field as one kind
        (number, string or bool) only, or it is refused with both places."""
        path, kind = self.field_path(n), _KIND.get(typ)
        if path is None or kind is None:
            return
        seen = self.uses.setdefault(path, (kind, col))
        if seen[0] != kind:
            self.errors.append(f"'{path}' is used as a {seen[0]} at column {seen[1]} and as a {kind}"
                               f" at column {col}")

    def gen(self, n: Node) -> tuple[str, str]:  # noqa: C901 - one dispatch over the node kinds
        if isinstance(n, Lit):
            v = n.value
            if v is None:
                return "None", "null"
            if isinstance(v, bool):
                return repr(v), "bool"
            if isinstance(v, int):
                return repr(v), "int"
            if isinstance(v, float):
                return repr(v), "double"
            return repr(v), "string"
        if isinstance(n, Ident):
            for name, py, typ in self.env.variables:
                if name == n.name:
                    self.names.add(name)
                    return py, typ
            if not self.env.event_fields:
                known = ", ".join(v[0] for v in self.env.variables)
                return self.err(f"undeclared reference '{n.name}' at column {n.col} (this expression"
                                f" sees only: {known})")
            self.fields.add(n.name)
            typ = dict(self.env.field_types).get(n.name, "dyn")
            return f"e.get({n.name!r}, _M)", typ
        if isinstance(n, Select):
            code, typ = self.gen(n.operand)
            if typ not in ("dyn", "map"):
                return self.err(f"a {typ} has no field '{n.field}' at column {n.col}")
            self.tmp += 1
            t = f"_t{self.tmp}"
            return f"({t}.get({n.field!r}, _M) if ({t} := {code}).__class__ is dict else _M)", "dyn"
        if isinstance(n, Index):
            code, typ = self.gen(n.operand)
            icode, ityp = self.gen(n.index)
            if typ not in ("dyn", "map", "list"):
                return self.err(f"cannot index a {typ} at column {n.col}")
            if ityp not in ("dyn", "int", "string"):
                return self.err(f"an index must be an int or a string, not {ityp}, at column {n.col}")
            return f"_idx({code}, {icode})", "dyn"
        if isinstance(n, ListLit):
            parts = [self.gen(i) for i in n.items]
            return "[" + ", ".join(p[0] for p in parts) + "]", "list"
        if isinstance(n, Unary):
            code, typ = self.gen(n.operand)
            if n.op == "!":
                if typ not in ("bool", "dyn"):
                    return self.err(f"'!' needs a bool, not {typ}, at column {n.col}")
                self.use(n.operand, "bool", n.col)
                return f"(not {self.truth(code, typ)})", "bool"
            if typ not in ("int", "double", "number", "dyn"):
                return self.err(f"'-' needs a number, not {typ}, at column {n.col}")
            self.use(n.operand, "number", n.col)
            return f"(-{code})", "number" if typ == "dyn" else typ
        if isinstance(n, Cond):
            tcode, ttyp = self.gen(n.test)
            if ttyp not in ("bool", "dyn"):
                self.err(f"the test of '?:' must be a bool, not {ttyp}, at column {n.col}")
            acode, atyp = self.gen(n.then)
            bcode, btyp = self.gen(n.other)
            if atyp == btyp:
                typ = atyp
            elif {atyp, btyp} <= _NUMERIC:  # promoted as arithmetic promotes: int and double give double
                typ = "double" if "double" in (atyp, btyp) else "number"
            elif "dyn" in (atyp, btyp):
                typ = "dyn"
            else:
                return self.err(f"the branches of '?:' have different types ({atyp}, {btyp})"
                                f" at column {n.col}")
            return f"({acode} if {self.truth(tcode, ttyp)} else {bcode})", typ
        if isinstance(n, Binary):
            return self.binary(n)
        if isinstance(n, Call):
            return self.call(n)
        raise AssertionError(f"unknown node {n!r}")  # pragma: no cover

    @staticmethod
    def truth(code: str, typ: str) -> str:
        return code if typ == "bool" else f"({code} is True)"

    def binary(self, n: Binary) -> tuple[str, str]:
        op = n.op
        if op in ("&&", "||"):
            a, at = self.gen(n.left)
            b, bt = self.gen(n.right)
            for t in (at, bt):
                if t not in ("bool", "dyn"):
                    return self.err(f"'{op}' needs bool operands, not {t}, at column {n.col}")
            self.use(n.left, "bool", n.col)
            self.use(n.right, "bool", n.col)
            py = "and" if op == "&&" else "or"
            return f"({self.truth(a, at)} {py} {self.truth(b, bt)})", "bool"
        if op == "in":
            a, at = self.gen(n.left)
            if isinstance(n.right, ListLit) and all(isinstance(i, Lit) for i in n.right.items):
                values = [i.value for i in n.right.items if isinstance(i, Lit)]
                kinds = {_lit_type(v) for v in values}
                if at != "dyn" and kinds and not any(_compatible(at, k) for k in kinds):
                    return self.err(f"'in' compares a {at} with a list of {'/'.join(sorted(kinds))}"
                                    f" at column {n.col}")
                return f"({a} in {self.const(frozenset(values))})", "bool"
            b, bt = self.gen(n.right)
            if bt not in ("list", "map", "dyn"):
                return self.err(f"'in' needs a list or map on the right, not {bt}, at column {n.col}")
            return f"_in({a}, {b})", "bool"
        a, at = self.gen(n.left)
        b, bt = self.gen(n.right)
        if at == "dyn":
            self.use(n.left, "number" if op in ("-", "*", "/", "%") else bt, n.col)
        if bt == "dyn":
            self.use(n.right, "number" if op in ("-", "*", "/", "%") else at, n.col)
        if op in ("==", "!="):
            if not _compatible(at, bt) and "null" not in (at, bt):
                return self.err(f"no matching overload for '{op}' applied to ({at}, {bt})"
                                f" at column {n.col}")
            return f"({a} {op} {b})", "bool"
        if op in ("<", "<=", ">", ">="):
            ok = _compatible(at, bt) and (at in ("int", "double", "number", "string", "bool", "dyn"))
            if not ok:
                return self.err(f"no matching overload for '{op}' applied to ({at}, {bt})"
                                f" at column {n.col}")
            return f"({a} {op} {b})", "bool"
        # arithmetic
        typ = _arith(op, at, bt)
        if typ is None:
            return self.err(f"no matching overload for '{op}' applied to ({at}, {bt}) at column {n.col}")
        if op == "/":
            return f"_div({a}, {b})", typ
        if op == "%":
            return f"_mod({a}, {b})", typ
        return f"({a} {op} {b})", typ

    def call(self, n: Call) -> tuple[str, str]:
        fn, args = n.fn, list(n.args)
        if fn == "lookup":
            return gen_lookup(self, n)
        if fn == "has":
            if n.target is not None or len(args) != 1:
                return self.err(f"has() takes one field, e.g. has(a.b), at column {n.col}")
            arg = args[0]
            if isinstance(arg, Select):
                code, typ = self.gen(arg.operand)
                return f"_has({code}, {arg.field!r})", "bool"
            if isinstance(arg, Ident) and self.env.event_fields and not any(
                v[0] == arg.name for v in self.env.variables
            ):
                self.fields.add(arg.name)
                return f"({arg.name!r} in e)", "bool"
            return self.err(f"has() needs a field selection such as has(a.b) at column {n.col}")
        if n.target is not None:
            args.insert(0, n.target)
        sig = _FUNCTIONS.get(fn)
        if sig is None:
            return self.err(f"unknown function '{fn}' at column {n.col}")
        arity, arg_types, result, py = sig
        if len(args) != arity:
            return self.err(f"{fn}() takes {arity} argument{'s' if arity != 1 else ''}"
                            f" ({len(args)} given) at column {n.col}")
        if fn == "matches":
            subj, styp = self.gen(args[0])
            pat = args[1]
            if not isinstance(pat, Lit) or not isinstance(pat.value, str):
                return self.err(f"matches() needs a string literal pattern at column {n.col}")
            if styp not in ("string", "dyn"):
                return self.err(f"matches() applies to a string, not {styp}, at column {n.col}")
            self.use(args[0], "string", n.col)
            return f"_match({self.const(_regex(pat.value, n.col))}, {subj})", "bool"
        codes = []
        for arg, allowed in zip(args, arg_types, strict=True):
            code, typ = self.gen(arg)
            if typ == "number" and allowed & {"int", "double"}:
                typ = "int"  # int() / double() / string() take either
            if typ != "dyn" and typ not in allowed:
                return self.err(f"no matching overload for {fn}() applied to {typ} at column {n.col}")
            if fn in _STRING_FUNCTIONS:
                self.use(arg, "string", n.col)
            codes.append(code)
        return f"{py}({', '.join(codes)})", result


_FUNCTIONS: dict[str, tuple[int, tuple[set[str], ...], str, str]] = {
    # name: (arity incl. receiver, allowed types per argument, result, python helper)
    "size": (1, ({"string", "list", "map"},), "int", "_size"),
    "startsWith": (2, ({"string"}, {"string"}), "bool", "_sw"),
    "endsWith": (2, ({"string"}, {"string"}), "bool", "_ew"),
    "contains": (2, ({"string"}, {"string"}), "bool", "_ct"),
    "matches": (2, ({"string"}, {"string"}), "bool", "_match"),
    "int": (1, ({"int", "double", "string"},), "int", "_int"),
    "double": (1, ({"int", "double", "string"},), "double", "_double"),
    "string": (1, ({"int", "double", "string", "bool"},), "string", "_string"),
}


# --- public ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CelProgram:
    """A compiled expression: ``fn(arg, ...) -> bool``; ``fields`` are the top-level event fields it
    reads, ``names`` the declared variables (an aggregate condition's ``count``, ``windowEnd``...).
    With ``lookups``, ``fn(event, view)`` reads rows from the LookupView (absent without one)."""

    text: str
    fn: Callable[..., bool]
    fields: frozenset[str]
    source: str
    names: frozenset[str] = frozenset()
    lookups: tuple[LookupRef, ...] = ()  # the lookup() calls: tables read and their keys' expressions

    def __call__(self, arg: Any, *more: Any) -> bool:
        return self.fn(arg, *more)


def compile_expression(text: str, env: Env = EVENT_ENV, *, catch: bool = True) -> CelProgram:
    """Parse, type-check and compile ``text``; raises CelError listing every problem found.
    ``catch=False`` (tests): a run-time error raises instead of making the expression false."""
    try:
        tree = parse(text)
        gen = _Gen(env)
        code, typ = gen.gen(tree)
    except CelError:
        raise
    if typ not in ("bool", "dyn"):
        article = "an" if typ[0] in "aeiou" else "a"
        gen.errors.append(f"the expression must be a bool, but it is {article} {typ}")
    if gen.errors:
        raise CelError("; ".join(dict.fromkeys(gen.errors)))
    if env.event_fields:
        arg = "e, lk=_NOLK"  # lk: where lookup() reads rows (lookups.py); absent unless the engine passes one
    else:  # the first variable is positional, the rest default to 0 (``fn(value)`` still works)
        arg = ", ".join([env.variables[0][1]] + [f"{py}=0" for _n, py, _t in env.variables[1:]])
    body = code if typ == "bool" else f"({code} is True)"
    source = (
        f"def _cel({arg}):\n"
        f"    try:\n"
        f"        return {body}\n"
        f"    except _ERRORS:\n"
        f"        return False\n"
    )
    for i, (_table, kcode, _col) in enumerate(gen.lookups):  # each key alone: what to prefetch
        source += (f"def _key{i}(e):\n    try:\n        return {kcode}\n"
                   f"    except _ERRORS:\n        return _M\n")
    errors = _ERRORS if catch else ()
    namespace: dict[str, Any] = {**_RUNTIME, **gen.consts, "_ERRORS": errors, "_NOLK": NO_LOOKUPS,
                                 "__builtins__": {}}
    exec(compile(source, "<cel>", "exec"), namespace)  # noqa: S102 - source is generated from our AST
    refs = tuple(LookupRef(table, namespace[f"_key{i}"], f"lookup('{table}', ...) at column {col}")
                 for i, (table, _k, col) in enumerate(gen.lookups))
    return CelProgram(text, namespace["_cel"], frozenset(gen.fields), source, frozenset(gen.names), refs)
