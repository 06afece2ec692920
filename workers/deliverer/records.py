"""The deliverer's records on Kafka: dead-letter envelopes, decision-log (audit) entries and parked
(retry-topic) deliveries.

The dead-letter topic is shared with the evaluator's malformed events, so a delivery envelope is
marked twice: header ``alertpipe-dlq-kind: delivery`` and ``"kind": "delivery"`` in the JSON value
(key = delivery key). Audit entries are keyed by alert id, so one alert's history is in one
partition, in order. ``alertpipe dlq`` and ``alertpipe explain`` read them back with these helpers.
A parked delivery is the alert's JSON as read (value, key = alert id) with its channel, attempts and
not-before time in ``alertpipe-retry-*`` headers, so the body embedded in a webhook never changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from alertpipe.workers.alerts import Alert
from alertpipe.workers.tracing import TRACEPARENT, traceparent_of

__all__ = [
    "DLQ_KIND_DELIVERY",
    "DLQ_KIND_HEADER",
    "REPLAY_HEADER",
    "AuditEntry",
    "Decision",
    "DeadLetter",
    "Parked",
    "dead_letter_from_json",
    "expand_received",
    "is_delivery_dead_letter",
    "received_reason",
]

DLQ_KIND_HEADER = "alertpipe-dlq-kind"
DLQ_KIND_DELIVERY = "delivery"
# Set by `alertpipe dlq replay` on the alert it produces back: value = replay time (epoch ms).
REPLAY_HEADER = "alertpipe-replayed-at-ms"

Decision = Literal[
    "received",  # the alert was read from the alerts topic (a row of its own only without channels)
    "delivered",  # a 2xx (or SMTP 250)
    "retry",  # an attempt failed; another one follows after a backoff
    "dead_lettered",  # gave up; written to the dead-letter topic
    "fallback",  # gave up on a channel; its fallback channel is tried next
    "muted",  # the channel is muted by a kill switch: terminal, not sent
    "skipped_delivered",  # already delivered (a replay, crash or rebalance): not sent again
    "skipped_dead",  # already dead-lettered earlier: not sent again (replay with `alertpipe dlq replay`)
    "invalid",  # the message on the alerts topic is not an alert: dead-lettered
    "parked",  # written to the retry topic for a later attempt (failing channel or open circuit)
]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the decision log."""

    alert_id: str
    decision: Decision
    at_ms: int
    status: str = ""  # firing / resolved
    channel: str = ""
    delivery_key: str = ""
    attempt: int = 0
    status_code: int | None = None
    latency_ms: float | None = None
    reason: str = ""
    delay_s: float | None = None
    rule: str = ""
    pipeline: str = ""
    tenant: str = ""
    revision: str = ""
    # when the delivery's alert was read from the alerts topic (folded in: no separate record)
    received_ms: int | None = None
    fired_ms: int | None = None  # the alert's event time
    replayed: bool = False  # read back from `alertpipe dlq replay`

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (slots) dataclasses natively, fast

    @classmethod
    def from_json(cls, raw: bytes) -> AuditEntry:
        data = orjson.loads(raw)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that gave up: the alert, the channel, why, how many attempts, the last response."""

    alert: dict[str, Any]
    channel: str
    delivery_key: str
    reason: str
    attempts: int
    last_status: int | None
    last_response: str
    first_attempt_ms: int
    dead_at_ms: int
    pipeline: str
    tenant: str
    kind: str = DLQ_KIND_DELIVERY
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    def headers(self) -> list[tuple[str, bytes]]:
        return [(DLQ_KIND_HEADER, DLQ_KIND_DELIVERY.encode()), ("alertpipe-channel", self.channel.encode())]

    def to_alert(self) -> Alert:
        return Alert.model_validate(self.alert)


def is_delivery_dead_letter(headers: list[tuple[str, bytes | None]] | None) -> bool:
    for k, v in headers or ():
        if k == DLQ_KIND_HEADER and v == DLQ_KIND_DELIVERY.encode():
            return True
    return False


def dead_letter_from_json(raw: bytes) -> DeadLetter | None:
    """A DeadLetter from a dead-letter value, or None for another kind (e.g. a malformed event)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("kind") != DLQ_KIND_DELIVERY:
        return None
    known = set(DeadLetter.__dataclass_fields__)
    try:
        return DeadLetter(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


_RETRY_PREFIX = "alertpipe-retry-"


@dataclass(frozen=True, slots=True)
class Parked:
    """A delivery to one channel waiting on the retry topic: not before ``not_before_ms``."""

    channel: str
    attempts: int  # attempts made so far (all passes)
    hops: int  # times parked so far (drives the backoff of the next park)
    not_before_ms: int
    origin_ms: int  # the age budget counts from here (the alert's produce or replay time)
    produced_ms: int  # produce time on the alerts topic (delivery latency)
    first_attempt_ms: int = 0
    replay: bool = False
    last_status: int | None = None
    last_response: str = ""
    trace: bytes | None = None  # the alert's traceparent (spec.tracing): the later pass continues its trace

    def headers(self) -> list[tuple[str, bytes]]:
        out = [(_RETRY_PREFIX + k, str(v).encode()) for k, v in self._ints().items()]
        out.append((_RETRY_PREFIX + "channel", self.channel.encode()))
        if self.replay:
            out.append((_RETRY_PREFIX + "replay", b"1"))
        if self.last_status is not None:
            out.append((_RETRY_PREFIX + "last-status", str(self.last_status).encode()))
        if self.last_response:
            out.append((_RETRY_PREFIX + "last-response", self.last_response[:300].encode()))
        if self.trace is not None:
            out.append((TRACEPARENT, self.trace))
        return out

    def _ints(self) -> dict[str, int]:
        return {
            "attempts": self.attempts,
            "hops": self.hops,
            "not-before-ms": self.not_before_ms,
            "origin-ms": self.origin_ms,
            "produced-ms": self.produced_ms,
            "first-attempt-ms": self.first_attempt_ms,
        }

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes | None]] | None) -> Parked:
        """Raises ValueError naming the header that is missing or malformed."""
        h = {
            k[len(_RETRY_PREFIX) :]: (v or b"").decode("utf-8", "replace")
            for k, v in headers or ()
            if k.startswith(_RETRY_PREFIX)
        }

        def num(name: str) -> int:
            try:
                return int(h[name])
            except KeyError:
                raise ValueError(f"retry record without header {_RETRY_PREFIX}{name}") from None
            except ValueError:
                raise ValueError(f"retry record header {_RETRY_PREFIX}{name} is not an integer") from None

        channel = h.get("channel")
        if not channel:
            raise ValueError(f"retry record without header {_RETRY_PREFIX}channel")
        status = h.get("last-status")
        return cls(
            channel=channel,
            attempts=num("attempts"),
            hops=num("hops"),
            not_before_ms=num("not-before-ms"),
            origin_ms=num("origin-ms"),
            produced_ms=num("produced-ms"),
            first_attempt_ms=num("first-attempt-ms"),
            replay=h.get("replay") == "1",
            last_status=int(status) if status and status.isdigit() else None,
            last_response=h.get("last-response", ""),
            trace=traceparent_of(headers),
        )


def received_reason(event_time_ms: int, replayed: bool) -> str:
    when = datetime.fromtimestamp(event_time_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return f"fired at {when.replace('+00:00', 'Z')} (event time)" + (
        "; replayed from the dead-letter topic" if replayed else ""
    )


def expand_received(entries: list[AuditEntry]) -> list[AuditEntry]:
    """The decision log with a ``received`` row for every read of an alert, in time order.

    Delivery records carry when their alert was read (``received_ms``); one row per distinct read
    (all channels of one read share it) is put back in front of them.
    """
    rows: dict[tuple[str, str, int], AuditEntry] = {}
    for e in entries:
        if e.received_ms is None or e.decision == "received":
            continue
        k = (e.alert_id, e.status, e.received_ms)
        if k not in rows:
            rows[k] = AuditEntry(
                e.alert_id,
                "received",
                e.received_ms,
                status=e.status,
                reason=received_reason(e.fired_ms or 0, e.replayed),
                rule=e.rule,
                pipeline=e.pipeline,
                tenant=e.tenant,
                revision=e.revision,
            )
    out = [*rows.values(), *entries]
    out.sort(key=lambda e: e.at_ms)  # stable: a received row stays before records of the same ms
    return out
