"""Event schemas (spec.schema): checking an event against its type's JSON Schema, and judging whether
a new version of a schema is backward compatible with the one in force.

Validation uses jsonschema's draft 2020-12 validator; a schema's ``$ref`` may point inside itself
only (no registry is given, so nothing is fetched). An error names the JSON path of the value that
fails (``$.reading.value``), the first one by jsonschema's relevance order.

Backward compatible means: every event the old version accepted, the new one accepts too. The check
is structural and conservative about what it understands (properties, required, type, enum,
additionalProperties, minimum/maximum, minLength/maxLength, nested objects and array items); each
breaking change is reported with the schema path that breaks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from alertpipe.workers.config import SchemaSpec

__all__ = ["SchemaSet", "compatibility_errors", "event_path"]

Errors = list[tuple[str, str]]


def event_path(parts: Iterable[Any]) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


class SchemaSet:
    """Compiled validators of a pipeline's schemas, by event type."""

    def __init__(self, spec: SchemaSpec | None) -> None:
        self._by_type: dict[str, tuple[int, Any]] = {}
        for t in spec.types if spec is not None else ():
            self._by_type[t.type] = (t.version, jsonschema.Draft202012Validator(t.json_schema))

    def __bool__(self) -> bool:
        return bool(self._by_type)

    def check(self, event: Mapping[str, Any]) -> str | None:
        """None when ``event`` matches its type's schema (or its type has none); else the reason."""
        hit = self._by_type.get(event.get("type"))  # type: ignore[arg-type]
        if hit is None:
            return None
        version, validator = hit
        err = best_match(validator.iter_errors(event))
        if err is None:
            return None
        return f"{event_path(err.absolute_path)}: {err.message} (schema {event.get('type')} v{version})"


# --- compatibility --------------------------------------------------------------------------------


def _types(s: Mapping[str, Any]) -> set[str] | None:
    t = s.get("type")
    if t is None:
        return None
    found = {t} if isinstance(t, str) else set(t)
    if "number" in found:
        found.add("integer")  # an integer is a number
    return found


def _compare(old: Mapping[str, Any], new: Mapping[str, Any], path: str, out: Errors) -> None:
    old_t, new_t = _types(old), _types(new)
    if new_t is not None and (old_t is None or not old_t <= new_t):
        shown = old_t - {"integer"} if old_t is not None and "number" in old_t else old_t
        was = "any type" if shown is None else "/".join(sorted(shown))
        out.append((f"{path}.type", f"narrowed from {was} to {new.get('type')}"))
    old_enum, new_enum = (set(map(repr, s.get("enum", []))) for s in (old, new))
    if "enum" in new and ("enum" not in old or not old_enum <= new_enum):
        out.append((f"{path}.enum", "no longer accepts every value the old version did"))
    for key, tighter in (("minimum", "raised"), ("minLength", "raised"), ("minItems", "raised")):
        if key in new and (key not in old or new[key] > old[key]):
            out.append((f"{path}.{key}", f"{tighter} to {new[key]}"))
    for key in ("maximum", "maxLength", "maxItems"):
        if key in new and (key not in old or new[key] < old[key]):
            out.append((f"{path}.{key}", f"lowered to {new[key]}"))
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(new_req - old_req):
        out.append((f"{path}.required", f"{name!r} is newly required (old events may lack it)"))
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties", True) is False:
        out.append((f"{path}.additionalProperties", "now false: fields the old version allowed are refused"))
    for name, old_sub in old_props.items():
        if name in new_props:
            _compare(old_sub, new_props[name], f"{path}.properties.{name}", out)
        elif new.get("additionalProperties", True) is False:
            out.append((f"{path}.properties.{name}", "removed while additionalProperties is false"))
        elif isinstance(new.get("additionalProperties"), Mapping):
            _compare(old_sub, new["additionalProperties"], f"{path}.additionalProperties", out)
    if isinstance(old.get("items"), Mapping) and isinstance(new.get("items"), Mapping):
        _compare(old["items"], new["items"], f"{path}.items", out)
    elif "items" in new and "items" not in old:
        out.append((f"{path}.items", "added: array items are now constrained"))


def compatibility_errors(
    old: SchemaSpec | None, new: SchemaSpec | None, prefix: str = "spec.schema"
) -> Errors:
    """Every (field path, reason) that makes ``new`` refuse events ``old`` accepted, for types in both.

    A type's version must grow when its schema changes and may never go down; a type that gains a
    schema is new (nothing was promised about it); a removed type is no longer checked.
    """
    errors: Errors = []
    if old is None or new is None:
        return errors
    for i, t in enumerate(new.types):
        was = old.of(t.type)
        if was is None:
            continue
        where = f"{prefix}.types[{i}]"
        if t.version < was.version:
            errors.append((f"{where}.version", f"went down from {was.version} to {t.version}"))
        elif t.json_schema != was.json_schema and t.version == was.version:
            errors.append((f"{where}.version", f"the schema of {t.type!r} changed: raise the version"))
        found: Errors = []
        _compare(was.json_schema, t.json_schema, f"{where}.jsonSchema", found)
        errors += [(p, f"{r} (breaks {t.type} v{was.version} events)") for p, r in found]
    return errors
