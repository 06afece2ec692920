"""The alert message: what the evaluator produces to the alerts topic and the deliverer consumes.

An alert's id is deterministic (tenant, pipeline, rule, group key, episode start in event time), so
a replay after a crash produces the same id. Each message is one transition of that alert:
``firing`` or ``resolved``. Deliveries are keyed by (alert id, status, channel).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["Alert", "AlertStatus", "alert_id"]

AlertStatus = Literal["firing", "resolved"]


def alert_id(tenant: str, pipeline: str, rule: str, group_key: str, episode_start_ms: int) -> str:
    """The deterministic id of one alert episode."""
    raw = "\x1f".join((tenant, pipeline, rule, group_key, str(episode_start_ms)))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Alert(BaseModel):
    """One transition of one alert episode."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    id: str
    status: AlertStatus
    tenant: str
    pipeline: str
    rule: str
    severity: str
    group_key: str = Field(description="Group-key values joined, e.g. 'deviceId=d1'.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict)
    channels: list[str] = Field(default_factory=list)
    starts_at_ms: int = Field(description="Episode start, event time.")
    ends_at_ms: int | None = Field(None, description="Resolution, event time.")
    event_time_ms: int = Field(description="Event time of the transition.")
    ingest_time_ms: int | None = Field(None, description="When the triggering event was ingested.")
    processed_at_ms: int = Field(description="Wall clock when the evaluator emitted it.")
    revision: str = Field("", description="Config revision that evaluated it.")
    pii: dict[str, Any] | None = Field(
        None,
        exclude=True,  # read from the alerts topic, never written out from the model
        description="Raw forms of fields masked for spec.pii (groupKey, labels, annotations), present only"
        " when a channel sets includePii; the deliverer strips it from every other output.",
    )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        return cls.model_validate(orjson.loads(raw))

    def delivery_key(self, channel: str) -> str:
        """Idempotency-Key / dedup scope of one delivery: (alert id, transition, channel)."""
        return f"{self.id}:{self.status}:{channel}"
