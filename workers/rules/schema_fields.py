"""Rules against the pipeline's event schemas: every event field a rule reads must be one the schemas
of its selected types declare (``properties``), so a typo or a renamed field fails at compile time
instead of never matching.

Checked: the filter and a threshold's condition (their top-level fields), ``by``, an aggregate's
``field``, and a threshold's annotation templates (the others render computed names). Skipped: a
rule that selects every type, or a type without a schema (nothing is declared to check against).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from alertpipe.workers.config import SchemaSpec
from alertpipe.workers.rules.compiler import CompiledRule

__all__ = ["ENVELOPE_FIELDS", "schema_field_errors"]

ENVELOPE_FIELDS = frozenset({"tenant", "deviceId", "seq", "ts", "type"})  # every event has them
_TEMPLATE_PART = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)


def _declared(json_schema: dict[str, object]) -> set[str]:
    props = json_schema.get("properties")
    return set(props) if isinstance(props, dict) else set()


def schema_field_errors(rule: CompiledRule, schema: SchemaSpec | None) -> list[tuple[str, str]]:
    """(field path in the rule, reason) for each field none of its selected types declares."""
    if schema is None or not rule.types:
        return []
    found = [schema.of(t) for t in rule.types]
    if any(s is None for s in found):
        return []
    declared = set(ENVELOPE_FIELDS)
    for s in found:
        assert s is not None  # noqa: S101 - checked above
        declared |= _declared(s.json_schema)
    used: list[tuple[str, Iterable[str]]] = []
    if rule.filter is not None:
        used.append(("spec.select.filter", rule.filter.fields))
    if rule.kind == "threshold" and rule.condition is not None:
        used.append(("spec.threshold.condition", rule.condition.fields))
    used += [(f"spec.by[{i}]", [path[0]]) for i, path in enumerate(rule.by)]
    if rule.field is not None:
        used.append(("spec.aggregate.field", [rule.field[0]]))
    if rule.kind == "threshold":
        for k, t in rule.annotations.items():
            used.append((f"spec.annotations.{k}", [e.split(".")[0] for e in _TEMPLATE_PART.findall(t.text)]))
    types = ", ".join(f"{t} v{s.version}" for t, s in zip(rule.types, found, strict=True) if s is not None)
    errors = []
    for path, fields in used:
        for f in sorted(set(fields) - declared):
            errors.append((path, f"field {f!r} is not in the event schema ({types})"))
    return errors
