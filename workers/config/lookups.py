"""``spec.lookups``: how the evaluator caches the lookup tables rules read (``lookup('t', key)``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.durations import Duration

__all__ = ["LookupSettings", "TableName"]

TableName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
          description="A lookup table's name: letters, digits, '_', '-', '.', at most 63."),
]


class LookupSettings(Model):
    """The evaluator reads lookup rows through a per-process LRU: a row older than ``ttl`` is read
    again from Redis with the next batch that needs it, so a change is seen within about ``ttl``."""

    ttl: Duration = Field("30s", description="How long a cached row is used before it is read again.")
    max_entries: int = Field(
        100_000, ge=1, le=10_000_000, description="Rows kept per evaluator process (least recently used go)."
    )
    tables: list[TableName] = Field(
        default_factory=list, max_length=64,
        description="The tables rules may read; a rule reading another is refused. Empty: any table.",
    )
