"""The CEL subset's run-time: the *missing* value and the helpers generated code calls. No I/O."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_MATCH_INPUT", "MISSING"]

MAX_MATCH_INPUT = 4096


class _Missing:
    """The value of a field that is not there; see the module docstring for its semantics."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return False

    def __lt__(self, other: object) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self) -> int:
        return 0x5EED

    def _same(self, *_: object) -> _Missing:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __mod__ = __rmod__ = __neg__ = _same

    def __contains__(self, item: object) -> bool:
        return False


MISSING: Any = _Missing()


# --- run-time helpers (referenced by generated code) ---------------------------------------------


def _div(a: Any, b: Any) -> Any:
    if a.__class__ is int and b.__class__ is int:
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q
    return a / b


def _mod(a: Any, b: Any) -> Any:
    if a.__class__ is int and b.__class__ is int:
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    if a is MISSING or b is MISSING:
        return MISSING
    raise TypeError("% needs integers")


def _idx(a: Any, i: Any) -> Any:
    cls = a.__class__
    if cls is dict:
        return a.get(i, MISSING) if i.__class__ is str else MISSING
    if cls is list:
        if i.__class__ is int and 0 <= i < len(a):
            return a[i]
        return MISSING
    return MISSING


def _sel(a: Any, name: str) -> Any:
    return a.get(name, MISSING) if a.__class__ is dict else MISSING


def _has(a: Any, name: str) -> bool:
    return a.__class__ is dict and name in a


def _in(x: Any, seq: Any) -> bool:
    cls = seq.__class__
    if cls is list:
        return x in seq
    if cls is dict:
        return x in seq
    return False


def _size(x: Any) -> Any:
    if x.__class__ in (str, list, dict):
        return len(x)
    if x is MISSING:
        return MISSING
    raise TypeError("size() needs a string, list or map")


def _sw(s: Any, p: Any) -> bool:
    return s.__class__ is str and p.__class__ is str and s.startswith(p)


def _ew(s: Any, p: Any) -> bool:
    return s.__class__ is str and p.__class__ is str and s.endswith(p)


def _ct(s: Any, p: Any) -> bool:
    return s.__class__ is str and p.__class__ is str and p in s


def _match(rx: re.Pattern[str], s: Any) -> bool:
    return s.__class__ is str and len(s) <= MAX_MATCH_INPUT and rx.search(s) is not None


def _int(x: Any) -> Any:
    cls = x.__class__
    if cls is int:
        return x
    if cls is float:
        if x != x or x in (float("inf"), float("-inf")):
            raise ValueError("int() of a non-finite double")
        return int(x)
    if cls is str:
        return int(x.strip(), 10)
    if x is MISSING:
        return MISSING
    raise TypeError("int() of an unsupported type")


def _double(x: Any) -> Any:
    cls = x.__class__
    if cls is float:
        return x
    if cls is int or cls is str:
        return float(x)
    if x is MISSING:
        return MISSING
    raise TypeError("double() of an unsupported type")


def _string(x: Any) -> Any:
    cls = x.__class__
    if cls is str:
        return x
    if cls is bool:
        return "true" if x else "false"
    if cls is int or cls is float:
        return str(x)
    if x is MISSING:
        return MISSING
    raise TypeError("string() of an unsupported type")


def _lookup(lk: Any, table: str, key: Any) -> Any:
    """A row of a lookup table (a dict), or missing: no such row, or a key that is not a string/int."""
    cls = key.__class__
    if cls is not str:
        if cls is not int:
            return MISSING
        key = str(key)
    row = lk.row(table, key)
    return MISSING if row is None else row


_RUNTIME: dict[str, Any] = {
    "_M": MISSING, "_div": _div, "_mod": _mod, "_idx": _idx, "_sel": _sel, "_has": _has,
    "_in": _in, "_size": _size, "_sw": _sw, "_ew": _ew, "_ct": _ct, "_match": _match,
    "_int": _int, "_double": _double, "_string": _string, "dict": dict,
    "_lookup": _lookup,
}
_ERRORS = (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, KeyError,
           IndexError, RecursionError)
