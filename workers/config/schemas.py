"""``spec.schema``: a JSON Schema per event type, with a version, checked where events come in."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator, model_validator

from alertpipe.workers.config.base import Model

__all__ = ["EventSchema", "SchemaSpec"]


class EventSchema(Model):
    """The schema of one event type: events of ``type`` must match jsonSchema (draft 2020-12)."""

    type: str = Field(min_length=1, max_length=128, description="The event type (the events' `type`).")
    version: int = Field(ge=1, description="Raise it with every change (each must stay backward compatible).")
    json_schema: dict[str, Any] = Field(description="JSON Schema (draft 2020-12) of the whole event object.")

    @field_validator("json_schema")
    @classmethod
    def _a_valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
            raise ValueError(f"not a JSON Schema: {where or '(root)'}: {exc.message}") from None
        return value


class SchemaSpec(Model):
    """Event schemas of the pipeline; types without one are not checked."""

    types: list[EventSchema] = Field(min_length=1, max_length=256, description="One schema per event type.")
    validate_at: Literal["ingest", "topic"] = Field(
        "ingest",
        description="ingest: the ingestor refuses (400 with the path); topic: the evaluator dead-letters"
        " (with the path), for producers that write to Kafka directly.",
    )

    @model_validator(mode="after")
    def _one_per_type(self) -> SchemaSpec:
        names = [t.type for t in self.types]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"one schema per event type (repeated: {', '.join(dupes)})")
        return self

    def of(self, event_type: str) -> EventSchema | None:
        return next((t for t in self.types if t.type == event_type), None)
