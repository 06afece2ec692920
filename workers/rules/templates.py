"""Annotation templates: ``'CPU {{ value }} on {{ deviceId }}'``, checked when the rule compiles.

A deliberately small language (a name or dotted field path between ``{{ }}``) instead of Jinja:
annotations are rendered on the hot path of every transition and must never execute user code.
Numbers render in their shortest form (``85.5``, ``3``), missing values as ``<missing>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Template", "TemplateError", "compile_template", "render_value"]

_PART = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class TemplateError(ValueError):
    """A template does not compile; the message is one line."""


def render_value(v: Any) -> str:
    if v is None:
        return "<missing>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.6g}"
    if isinstance(v, int | str):
        return str(v)
    return str(v)


def _lookup(path: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    def get(ctx: Mapping[str, Any]) -> Any:
        cur: Any = ctx
        for p in path:
            if not isinstance(cur, dict | Mapping):
                return None
            cur = cur.get(p)
        return cur

    return get


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    parts: tuple[str | Callable[[Mapping[str, Any]], Any], ...]

    def render(self, ctx: Mapping[str, Any]) -> str:
        out = []
        for p in self.parts:
            out.append(p if isinstance(p, str) else render_value(p(ctx)))
        return "".join(out)


def compile_template(text: str, allowed: Collection[str] | None) -> Template:
    """Compile ``text``; ``allowed`` lists the top-level names it may use (None: any name)."""
    parts: list[str | Callable[[Mapping[str, Any]], Any]] = []
    pos = 0
    for m in _PART.finditer(text):
        literal = text[pos : m.start()]
        if "{{" in literal or "}}" in literal:
            raise TemplateError(f"unbalanced '{{{{' or '}}}}' at character {pos + 1}")
        parts.append(literal)
        expr = m.group(1)
        if not _PATH.match(expr):
            raise TemplateError(
                f"'{{{{ {expr} }}}}' is not a name or field path (write e.g. {{{{ value }}}})"
            )
        head = expr.split(".")[0]
        if allowed is not None and head not in allowed:
            raise TemplateError(
                f"unknown name '{head}' in '{{{{ {expr} }}}}' (known: {', '.join(sorted(allowed))})"
            )
        parts.append(_lookup(tuple(expr.split("."))))
        pos = m.end()
    rest = text[pos:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced '{{{{' or '}}}}' at character {pos + 1}")
    parts.append(rest)
    return Template(text, tuple(p for p in parts if p != ""))
