"""Validating AlertRules and AlertPipeline specs into (field path, reason) pairs a user can act on.

A rule is checked in two steps: its spec against the contract's RuleSpec (types, durations, unknown
fields), then by the rule engine's own compiler, ``alertpipe.workers.rules.compile_rule`` (CEL, fields,
channels): the same compiler the evaluator runs, so the operator never accepts what a worker rejects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from alertpipe.operator.decisions.topics import topic_name_errors
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.models import ChannelSpec, RuleSpec, SchemaSpec
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.rules import compile_rule
from alertpipe.workers.rules.schema_fields import schema_field_errors
from alertpipe.workers.schemas import compatibility_errors

__all__ = [
    "RuleVerdict",
    "errors_text",
    "pydantic_errors",
    "schema_change_errors",
    "validate_pipeline",
    "validate_pipeline_spec",
    "validate_rule",
    "validate_rule_in",
]

logger = logging.getLogger(__name__)

Errors = list[tuple[str, str]]


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out


def pydantic_errors(exc: ValidationError, prefix: str = "spec") -> Errors:
    """(path, reason) for each pydantic error, paths in the manifest's camelCase spelling."""
    out: Errors = []
    for err in exc.errors(include_url=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not in the schema; check the spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append((_path(prefix, err["loc"]), msg))
    return out


def errors_text(errors: Errors) -> str:
    """One line: ``path: reason; path: reason``."""
    return "; ".join(f"{p}: {r}" for p, r in errors)


@dataclass(frozen=True)
class RuleVerdict:
    """The outcome of validating one rule (optionally against one pipeline's channels)."""

    spec: RuleSpec | None
    errors: Errors = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.spec is not None and not self.errors

    @property
    def message(self) -> str:
        return errors_text(self.errors)


def validate_rule(
    name: str,
    raw_spec: Mapping[str, Any] | None,
    channels: Sequence[ChannelSpec] | None = None,
    schema: SchemaSpec | None = None,
    tables: Sequence[str] | None = None,
) -> RuleVerdict:
    """Validate an AlertRule's spec; with ``channels``, also that every channel it names exists;
    with ``schema`` (the pipeline's spec.schema), that the event fields it reads are declared;
    with ``tables`` (spec.lookups.tables), that the lookup tables it reads are declared."""
    if not isinstance(raw_spec, Mapping):
        return RuleVerdict(None, [("spec", "required: an AlertRule needs a spec")])
    try:
        spec = RuleSpec.model_validate(dict(raw_spec))
    except ValidationError as exc:
        return RuleVerdict(None, pydantic_errors(exc))
    errors: Errors = []
    try:  # the rule engine's compiler: the expressions, durations and the channels it names
        compiled = compile_rule(name, spec, channels=list(channels) if channels is not None else None,
                                tables=tables)
    except RuleCompileError as exc:
        errors.extend(exc.errors)
    else:
        errors.extend(schema_field_errors(compiled, schema))
    return RuleVerdict(spec, errors)


Selecting = (
    tuple[str, Sequence[ChannelSpec]]
    | tuple[str, Sequence[ChannelSpec], SchemaSpec | None]
    | tuple[str, Sequence[ChannelSpec], SchemaSpec | None, Sequence[str]]
)
"""A pipeline that selects a rule: its name, channels and (optionally) its event schemas and the
lookup tables it declares."""


def validate_rule_in(
    name: str,
    raw_spec: Mapping[str, Any] | None,
    pipelines: Sequence[Selecting],
) -> RuleVerdict:
    """The admission verdict: what the status of each selecting pipeline (name, channels) will say.
    Channel names are checked per pipeline, never against the union of their channels (a rule
    whose channel one of its pipelines lacks is refused, naming that pipeline)."""
    base = validate_rule(name, raw_spec, None)
    if not base.valid or not pipelines:
        return base
    errors: Errors = []
    for pipeline, channels, *rest in pipelines:
        schema = rest[0] if rest else None
        tables = rest[1] if len(rest) > 1 else None
        for path, reason in validate_rule(name, raw_spec, channels, schema, tables).errors:  # type: ignore[arg-type]
            errors.append((path, f"{reason} (AlertPipeline {pipeline})"))
    return RuleVerdict(base.spec, errors)


def validate_pipeline_spec(raw_spec: Mapping[str, Any] | None) -> tuple[AlertPipelineSpec | None, Errors]:
    if not isinstance(raw_spec, Mapping):
        return None, [("spec", "required: an AlertPipeline needs a spec")]
    try:
        return AlertPipelineSpec.model_validate(dict(raw_spec)), []
    except ValidationError as exc:
        return None, pydantic_errors(exc)


def model_dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def validate_pipeline(
    namespace: str, name: str, raw_spec: Mapping[str, Any] | None
) -> tuple[AlertPipelineSpec | None, Errors]:
    """The spec as :func:`validate_pipeline_spec` checks it, and its topic names as the pipeline's
    namespace allows them (``topic_name_errors``): a spec with either kind of error is invalid."""
    spec, errors = validate_pipeline_spec(raw_spec)
    if spec is None:
        return None, errors
    errors = topic_name_errors(namespace, name, spec.kafka)
    return (None, errors) if errors else (spec, [])


def schema_change_errors(old_raw_spec: Mapping[str, Any] | None, spec: AlertPipelineSpec) -> Errors:
    """What an update of spec.schema breaks for events the version in force accepted (backward
    compatibility, ``alertpipe.workers.schemas``); empty on create or when the old spec is unreadable."""
    old, _ = validate_pipeline_spec(old_raw_spec) if isinstance(old_raw_spec, Mapping) else (None, [])
    if old is None:
        return []
    return compatibility_errors(old.event_schema, spec.event_schema)
