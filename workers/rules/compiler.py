"""compile_rule: an AlertRule's RuleSpec → a CompiledRule the engine runs, or every error with its path.

The operator calls this to validate AlertRules (admission and status) and the evaluator to load a
config revision: one compiler, so the operator never accepts what a worker rejects. Paths are
relative to the AlertRule object (``spec.threshold.condition``, ``spec.channels[1]``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from alertpipe.workers.config import RuleSpec, parse_duration
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.rules.cel import AGGREGATE_ENV, EVENT_ENV, CelError, CelProgram, compile_expression
from alertpipe.workers.rules.lookups import LookupRef
from alertpipe.workers.rules.templates import Template, TemplateError, compile_template

__all__ = ["CompiledRule", "compile_rule", "rule_from_manifest"]

_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPECT_KEYS = {"status", "groupKey", "labels", "annotations", "values", "at", "severity"}
MAX_PANES = 1000
MAX_WINDOW_S = 7 * 86400.0
MIN_WINDOW_S = 0.1


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to run. Times are integer milliseconds of event time."""

    name: str
    spec: RuleSpec
    kind: str  # threshold | aggregate | absence
    types: tuple[str, ...]  # empty: every event type
    filter: CelProgram | None
    by: tuple[tuple[str, ...], ...]  # group-key field paths
    by_names: tuple[str, ...]
    condition: CelProgram | None  # threshold: over the event; aggregate: over value
    fn: str | None  # aggregate function
    field: tuple[str, ...] | None  # aggregate field path
    window_ms: int
    every_ms: int
    for_ms: int
    absence_ms: int
    severity: str
    labels: Mapping[str, str]
    annotations: Mapping[str, Template]
    channels: tuple[str, ...]
    fingerprint: str
    lookups: tuple[LookupRef, ...] = ()  # the lookup() calls of filter and condition (lookups.py)

    @property
    def tables(self) -> frozenset[str]:
        """The lookup tables this rule reads."""
        return frozenset(ref.table for ref in self.lookups)

    @property
    def panes(self) -> int:
        return self.window_ms // self.every_ms if self.every_ms else 0

    @property
    def spans_devices(self) -> bool:
        """Its groups can hold events of several devices (``by`` lacks deviceId): it needs the
        repartition stage to see the whole stream (docs/evaluator.md)."""
        return ("deviceId",) not in self.by


def _ms(text: str) -> int:
    return round(parse_duration(text) * 1000)


def _fingerprint(name: str, spec: RuleSpec) -> str:
    body = spec.model_dump(mode="json", by_alias=True, exclude={"tests"})
    raw = orjson.dumps({"name": name, "spec": body}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:16]


def _channel_names(channels: Collection[Any]) -> list[str]:
    return [c if isinstance(c, str) else str(c.name) for c in channels]


def compile_rule(
    name: str, spec: RuleSpec, *, channels: Collection[Any] | None = None,
    tables: Collection[str] | None = None,
) -> CompiledRule:
    """Compile ``spec``; raise RuleCompileError with every (path, reason) found.

    ``channels`` are the names the pipeline defines (strings or ChannelSpec objects); None skips
    the channel check. ``tables``: the lookup tables the pipeline declares (``spec.lookups.tables``);
    None (or empty) skips that check.
    """
    errors: list[tuple[str, str]] = []

    def cel(path: str, text: str, env: Any = EVENT_ENV) -> CelProgram | None:
        try:
            return compile_expression(text, env)
        except CelError as exc:
            for reason in exc.reason.split("; "):
                errors.append((path, reason))
            return None

    def duration(path: str, text: str | None, *, positive: bool = True) -> int:
        if text is None:
            return 0
        ms = _ms(text)
        if positive and ms <= 0:
            errors.append((path, f"must be longer than zero (got {text!r})"))
        return ms

    for i, t in enumerate(spec.select.types):
        if not t or len(t) > 128:
            errors.append((f"spec.select.types[{i}]", "an event type is a string of 1..128 characters"))
    if len(set(spec.select.types)) != len(spec.select.types):
        errors.append(("spec.select.types", "lists a type more than once"))
    flt = cel("spec.select.filter", spec.select.filter) if spec.select.filter else None

    by: list[tuple[str, ...]] = []
    if not spec.by:
        errors.append(("spec.by", "needs at least one group-key field (default: [deviceId])"))
    for i, f in enumerate(spec.by):
        if not _FIELD_PATH.match(f):
            errors.append((f"spec.by[{i}]", f"{f!r} is not a field name or dotted path (e.g. site.region)"))
        by.append(tuple(f.split(".")))
    if len(set(spec.by)) != len(spec.by):
        errors.append(("spec.by", "lists a field more than once"))

    condition: CelProgram | None = None
    fn: str | None = None
    agg_field: tuple[str, ...] | None = None
    window_ms = every_ms = absence_ms = 0
    kind = spec.kind
    if spec.threshold is not None:
        condition = cel("spec.threshold.condition", spec.threshold.condition)
    elif spec.aggregate is not None:
        agg = spec.aggregate
        fn = agg.fn
        if agg.field is None and agg.fn != "count":
            errors.append(("spec.aggregate.field", f"{agg.fn} needs the numeric field to aggregate"))
        elif agg.field is not None:
            if not _FIELD_PATH.match(agg.field):
                errors.append(("spec.aggregate.field", f"{agg.field!r} is not a field name or dotted path"))
            agg_field = tuple(agg.field.split("."))
        window_ms = duration("spec.aggregate.window", agg.window)
        w_s = window_ms / 1000
        if window_ms > 0 and not MIN_WINDOW_S <= w_s <= MAX_WINDOW_S:
            errors.append(("spec.aggregate.window", "must be between 100ms and 7d"))
        every_ms = duration("spec.aggregate.every", agg.every) if agg.every else window_ms
        if window_ms > 0 and every_ms > 0:
            if every_ms > window_ms:
                errors.append(("spec.aggregate.every", f"{agg.every} is longer than the window {agg.window}"))
            elif window_ms % every_ms:
                errors.append(("spec.aggregate.every", f"the window {agg.window} must be a whole multiple"
                               f" of every ({agg.every})"))
            elif window_ms // every_ms > MAX_PANES:
                errors.append(("spec.aggregate.every", f"window/every is {window_ms // every_ms}; at most"
                               f" {MAX_PANES} slides per window"))
        condition = cel("spec.aggregate.condition", agg.condition, AGGREGATE_ENV)
    elif spec.absence is not None:
        absence_ms = duration("spec.absence.for", spec.absence.for_)
        if spec.for_ is not None:
            errors.append(("spec.for", "absence rules use spec.absence.for; remove spec.for"))

    for_ms = duration("spec.for", spec.for_, positive=False) if kind != "absence" else 0

    for key in spec.labels:
        if not _LABEL_NAME.match(key):
            errors.append((f"spec.labels.{key}", "a label name is letters, digits and _ (not first a digit)"))
    allowed = _template_names(kind, spec)
    annotations: dict[str, Template] = {}
    for key, text in spec.annotations.items():
        try:
            annotations[key] = compile_template(text, allowed)
        except TemplateError as exc:
            errors.append((f"spec.annotations.{key}", str(exc)))

    if channels is not None:
        known = _channel_names(channels)
        for i, ch in enumerate(spec.channels):
            if ch not in known:
                errors.append((f"spec.channels[{i}]", f"channel {ch!r} is not defined by the pipeline"
                               f" (defined: {', '.join(sorted(known)) or 'none'})"))
    if len(set(spec.channels)) != len(spec.channels):
        errors.append(("spec.channels", "lists a channel more than once"))
    lookups = _lookups(spec, flt, condition, tables, errors)

    for ti, test in enumerate(spec.tests):
        for ei, ev in enumerate(test.events):
            for req in ("deviceId", "ts"):
                if req not in ev:
                    errors.append((f"spec.tests[{ti}].events[{ei}]", f"needs {req}"))
        for xi, exp in enumerate(test.expect):
            unknown = set(exp) - _EXPECT_KEYS
            if unknown:
                errors.append((f"spec.tests[{ti}].expect[{xi}]",
                               f"unknown key(s) {', '.join(sorted(unknown))}"
                               f" (use: {', '.join(sorted(_EXPECT_KEYS))})"))
            if exp.get("status") not in ("firing", "resolved"):
                errors.append((f"spec.tests[{ti}].expect[{xi}].status", "must be firing or resolved"))

    if errors:
        raise RuleCompileError(errors)
    return CompiledRule(
        name=name,
        spec=spec,
        kind=kind,
        types=tuple(spec.select.types),
        filter=flt,
        by=tuple(by),
        by_names=tuple(spec.by),
        condition=condition,
        fn=fn,
        field=agg_field,
        window_ms=window_ms,
        every_ms=every_ms,
        for_ms=for_ms,
        absence_ms=absence_ms,
        severity=spec.severity,
        labels=dict(spec.labels),
        annotations=annotations,
        channels=tuple(spec.channels),
        fingerprint=_fingerprint(name, spec),
        lookups=lookups,
    )


def _lookups(spec: RuleSpec, flt: CelProgram | None, condition: CelProgram | None,
             tables: Collection[str] | None, errors: list[tuple[str, str]]) -> tuple[LookupRef, ...]:
    """The rule's lookup() calls; errors for undeclared tables and where lookups cannot run."""
    where = [("spec.select.filter", flt), (f"spec.{spec.kind}.condition", condition)]
    refs: list[LookupRef] = []
    for path, prog in where:
        for ref in prog.lookups if prog is not None else ():
            if tables and ref.table not in tables:
                errors.append((path, f"{ref.text}: table {ref.table!r} is not declared in the pipeline's"
                               f" spec.lookups.tables ({', '.join(sorted(tables))})"))
            refs.append(ref)
    if condition is not None and condition.lookups and "deviceId" not in spec.by:
        errors.append((f"spec.{spec.kind}.condition", "lookup() in the condition of a rule whose groups span"
                       " devices (spec.by without deviceId) is not supported; use it in spec.select.filter"))
    return tuple(refs)


def _template_names(kind: str, spec: RuleSpec) -> set[str] | None:
    if kind == "threshold":
        return None  # any event field
    common = {"rule", "severity", "groupKey", *(b.split(".")[0] for b in spec.by)}
    if kind == "aggregate":
        return common | {"value", "fn", "window", "count", "windowStart", "windowEnd"}
    return common | {"lastSeen", "for", "silence"}


def rule_from_manifest(doc: Mapping[str, Any]) -> tuple[str, RuleSpec]:
    """(name, spec) of an AlertRule manifest (dict from YAML); RuleCompileError with paths otherwise."""
    kind = doc.get("kind")
    if kind is not None and kind != "AlertRule":
        raise RuleCompileError([("kind", f"expected AlertRule, got {kind!r}")])
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    errors: list[tuple[str, str]] = []
    if not isinstance(name, str) or not name:
        errors.append(("metadata.name", "required: the rule's name"))
        name = ""
    raw = doc.get("spec")
    if not isinstance(raw, dict):
        errors.append(("spec", "required: an AlertRule needs a spec"))
        raise RuleCompileError(errors)
    try:
        spec = RuleSpec.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            path = "spec"
            for part in err["loc"]:
                if isinstance(part, int):
                    path += f"[{part}]"
                elif not str(part).startswith("function-"):
                    path += f".{part}"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            errors.append((path, msg))
        raise RuleCompileError(errors) from None
    if errors:
        raise RuleCompileError(errors)
    return name, spec



