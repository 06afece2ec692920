"""``spec.pii``: which event fields are personal data, and how alertpipe masks them in what it writes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from alertpipe.workers.config.base import Model

__all__ = ["PiiSpec"]

FieldPath = Annotated[
    str,
    Field(
        max_length=256,
        pattern=r"^(\$\.)?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="An event field path: user.email or $.user.email (a path covers what is below it).",
    ),
]


class PiiSpec(Model):
    """Event fields masked in logs, dead letters, the audit topic and alert payloads (unless a
    channel sets includePii)."""

    fields: list[FieldPath] = Field(min_length=1, max_length=64, description="PII field paths.")
    mode: Literal["redact", "hash"] = Field(
        "redact",
        description="redact: [redacted]; hash: pii:<16 hex> (HMAC-SHA256 keyed by tenant/pipeline).",
    )
