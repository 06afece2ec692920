"""What one delivery carries from attempt to attempt (and through the retry topic): the alert's raw
bytes, when its age budget began, and the attempts made so far; plus the context variable that tells
a delivery's decision-log records when its alert was read."""

from __future__ import annotations

import contextvars
import dataclasses
from dataclasses import dataclass

__all__ = ["RECEIVED", "DeliveryContext"]


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    raw: bytes  # the alert's JSON as read (embedded as is in webhook bodies)
    replay: bool
    origin_s: float  # wall-clock seconds the age budget counts from (produce or replay time)
    produced_s: float  # produce time of the alert message (for delivery latency)
    # carried over from earlier passes when read back from the retry topic
    attempts: int = 0
    hops: int = 0
    first_ms: int = 0
    last_status: int | None = None
    last_detail: str = ""
    trace: bytes | None = None  # the alert record's traceparent (spec.tracing); a delivery span joins it

    def fresh(self) -> DeliveryContext:
        """For another channel (a fallback): same alert, no attempts yet."""
        return dataclasses.replace(self, attempts=0, hops=0, first_ms=0, last_status=None, last_detail="")


# (read at ms, event time ms, replayed) of the alert a delivery task was started for; tasks copy the
# context when created, so a task started from the retry topic sees None
RECEIVED: contextvars.ContextVar[tuple[int, int, bool] | None] = contextvars.ContextVar(
    "received", default=None
)
