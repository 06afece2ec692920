"""The CEL subset's type rules and checked regular expressions, used by the checker in cel.py.

Types: int, double, string, bool, null, list, map, dyn (unknown until run time); "number" is int
or double, not known which (arithmetic on a field of unknown type with a number).
"""

from __future__ import annotations

import re
from typing import Any

from alertpipe.workers.rules.cel_syntax import CelError

__all__ = ["MAX_REGEX_CHARS"]

MAX_REGEX_CHARS = 256
_NUMERIC = {"int", "double", "number"}


def _lit_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    return "dyn"


def _compatible(a: str, b: str) -> bool:
    if a == "dyn" or b == "dyn" or a == b:
        return True
    return a in _NUMERIC and b in _NUMERIC


def _arith(op: str, a: str, b: str) -> str | None:
    if a == "dyn" or b == "dyn":
        known = {a, b} - {"dyn"}
        if not known <= ({"int", "double", "number", "string", "list"} if op == "+" else _NUMERIC):
            return None
        if op != "+" or (known and known <= _NUMERIC):
            return "number"  # only numbers have - * / % (and + with a number)
        return "dyn"
    if a in _NUMERIC and b in _NUMERIC:
        if op == "%" and "double" in (a, b):
            return None
        if a == b == "int":
            return "int"
        return "number" if "number" in (a, b) else "double"
    if op == "+" and a == b and a in ("string", "list"):
        return a
    return None


_BAD_REGEX = re.compile(r"\\[1-9]|\(\?[=!<]|\(\?P=")


def _regex(pattern: str, col: int) -> re.Pattern[str]:
    if len(pattern) > MAX_REGEX_CHARS:
        raise CelError(f"matches() pattern is longer than {MAX_REGEX_CHARS} characters at column {col}")
    if _BAD_REGEX.search(pattern):
        raise CelError(f"matches() pattern uses back-references or look-around (not RE2) at column {col}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise CelError(f"matches() pattern is invalid ({exc}) at column {col}") from None
