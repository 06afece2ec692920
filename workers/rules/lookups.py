"""Lookup tables in rules: ``lookup('thresholds', deviceId).max``. No I/O.

A rule reads a row of a named table by a key computed from the event; the row is a map of field
to value (JSON types). The engine never fetches anything: it reads rows from a ``LookupView``
that its owner filled beforehand — the evaluator's Redis-backed cache, prefetched once per batch
for the keys ``lookup_keys`` names (workers/evaluator/lookups.py), or ``LookupTables`` in memory
(offline tests, ``spec.tests[].lookups``).

Semantics: the table is a string literal (known when the rule compiles: ``CompiledRule.lookups``
lists what it reads); the key is any expression over the event that gives a string or an int
(an int is read as its decimal text). A missing row — no such key, no such table, a key that is
missing or of another type — is the *missing* value: ``lookup(...).max`` is missing too, every
comparison with it is false, ``has(lookup('t', k).max)`` tests for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from alertpipe.workers.rules.cel_syntax import Binary, Call, Cond, Index, ListLit, Lit, Node, Select, Unary

if TYPE_CHECKING:
    from alertpipe.workers.rules.cel import _Gen
    from alertpipe.workers.rules.compiler import CompiledRule

__all__ = [
    "NO_LOOKUPS",
    "TABLE_NAME",
    "LookupRef",
    "LookupTables",
    "LookupView",
    "lookup_key",
    "lookup_keys",
]

TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class LookupView(Protocol):
    """Where the engine reads rows: ``row(table, key)`` → the row (a dict) or None when absent."""

    def row(self, table: str, key: str) -> dict[str, Any] | None: ...


class LookupTables:
    """Tables in memory: ``{table: {key: {field: value}}}``."""

    __slots__ = ("tables",)

    def __init__(self, tables: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            t: {str(k): dict(r) for k, r in rows.items()} for t, rows in (tables or {}).items()
        }

    def row(self, table: str, key: str) -> dict[str, Any] | None:
        rows = self.tables.get(table)
        return None if rows is None else rows.get(key)

    def put(self, table: str, key: str, row: Mapping[str, Any]) -> None:
        self.tables.setdefault(table, {})[key] = dict(row)

    def delete(self, table: str, key: str) -> None:
        self.tables.get(table, {}).pop(key, None)


NO_LOOKUPS: LookupView = LookupTables()


def lookup_key(value: Any) -> str | None:
    """The row key an expression's value names: a string as is, an int as decimal text, else None."""
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[no-any-return]
    if cls is int:
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class LookupRef:
    """One ``lookup(table, key)`` of a rule: the table and the key's expression, compiled."""

    table: str
    key: Callable[[dict[str, Any]], Any]  # the key expression over the event (missing on errors)
    text: str  # the key expression's source, for messages


def lookup_keys(rules: Iterable[CompiledRule], events: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(table, key) of every row the rules may read for these events: what to fetch first.

    A superset (the rule's filter is not applied: it may read lookups itself), by event type."""
    by_type: dict[str, list[LookupRef]] = {}
    wildcard: list[LookupRef] = []
    for r in rules:
        if not r.lookups:
            continue
        if r.types:
            for t in r.types:
                by_type.setdefault(t, []).extend(r.lookups)
        else:
            wildcard.extend(r.lookups)
    if not by_type and not wildcard:
        return set()
    index = {t: tuple(refs) + tuple(wildcard) for t, refs in by_type.items()}
    every = tuple(wildcard)
    out: set[tuple[str, str]] = set()
    add = out.add
    pairs = {t: tuple((r.table, r.key) for r in refs) for t, refs in index.items()}
    every_pairs = tuple((r.table, r.key) for r in every)
    for d in events:  # the hot part of a batch's prefetch: lookup_key inlined
        typ = d.get("type")
        for table, key in pairs.get(typ, every_pairs) if typ.__class__ is str else every_pairs:
            k = key(d)
            cls = k.__class__
            if cls is str:
                add((table, k))
            elif cls is int:
                add((table, str(k)))
    return out


def reads_lookup(n: Node) -> bool:
    """Whether the expression tree ``n`` calls lookup() anywhere."""
    return any(isinstance(x, Call) and x.fn == "lookup" for x in _walk(n))


def _walk(n: Node) -> Iterator[Node]:
    yield n
    children: Sequence[Any]
    if isinstance(n, Select | Unary):
        children = [n.operand]
    elif isinstance(n, Index):
        children = [n.operand, n.index]
    elif isinstance(n, Binary):
        children = [n.left, n.right]
    elif isinstance(n, Cond):
        children = [n.test, n.then, n.other]
    elif isinstance(n, ListLit):
        children = list(n.items)
    elif isinstance(n, Call):
        children = [*([n.target] if n.target is not None else []), *n.args]
    else:
        children = []
    for c in children:
        yield from _walk(c)


def gen_lookup(gen: _Gen, n: Call) -> tuple[str, str]:
    """``lookup('table', key)`` checked and compiled (called by cel.py's code generator)."""
    args = n.args
    if n.target is not None or len(args) != 2:
        return gen.err(f"lookup() takes a table name and a key, e.g. lookup('thresholds', deviceId),"
                       f" at column {n.col}")
    if not gen.env.event_fields:
        return gen.err(f"lookup() needs the event: it is available in select.filter and"
                       f" threshold.condition, not here, at column {n.col}")
    table = args[0]
    if not (isinstance(table, Lit) and isinstance(table.value, str)):
        return gen.err(f"lookup() needs the table as a string literal, e.g. lookup('thresholds', deviceId),"
                       f" at column {n.col}")
    if not TABLE_NAME.match(table.value):
        return gen.err(f"lookup() table {table.value!r} is not a table name (letters, digits, '_', '-',"
                       f" '.', at most 63) at column {n.col}")
    if reads_lookup(args[1]):
        return gen.err(f"the key of lookup() cannot itself read lookup() at column {n.col}")
    code, typ = gen.gen(args[1])
    if typ not in ("dyn", "string", "int", "number"):
        return gen.err(f"the key of lookup() must be a string or an int, not {typ}, at column {n.col}")
    gen.lookups.append((table.value, code, n.col))
    return f"_lookup(lk, {table.value!r}, {code})", "map"
