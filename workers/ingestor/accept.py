"""The ingest path shared by HTTP and gRPC, free of either transport: who may post, then validate,
produce, await Kafka's acknowledgements and decide the answer.

An Answer is said in HTTP terms (status, JSON body, Retry-After), the API's first language; the gRPC
server maps it to status codes (grpc_server.py), so both transports refuse the same input with the
same words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alertpipe.workers.config import PipelineConfig, parse_duration
from alertpipe.workers.ingestor.body import Batch, build_batch
from alertpipe.workers.ingestor.keys import AuthResult, KeyRing
from alertpipe.workers.ingestor.metrics import IngestorMetrics
from alertpipe.workers.ingestor.producer import BatchResult, EventProducer, ProducerNotReady, QueueFull
from alertpipe.workers.schemas import SchemaSet
from alertpipe.workers.tracing import HeaderList, SpanKind, Tracing

__all__ = [
    "MAX_REJECTS_LISTED",
    "RETRY_AFTER_BUSY",
    "RETRY_AFTER_UNAVAILABLE",
    "Answer",
    "admit",
    "decide",
    "publish",
    "rejects",
    "too_large",
]

logger = logging.getLogger(__name__)

RETRY_AFTER_UNAVAILABLE = 5  # seconds: the broker is down or the config not loaded
RETRY_AFTER_BUSY = 1  # seconds: too many events awaiting acknowledgement
MAX_REJECTS_LISTED = 1000


@dataclass(frozen=True, slots=True)
class Answer:
    """What to tell the client: an HTTP status, the JSON body, Retry-After seconds, extra headers."""

    status: int
    body: dict[str, Any]
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    batch: Batch | None = None  # the validated batch, when it got that far (its rejects)


def rejects(batch: Batch) -> dict[str, Any]:
    listed = [r.to_dict() for r in batch.rejects[:MAX_REJECTS_LISTED]]
    return {"rejectedCount": len(batch.rejects), "rejected": listed}


def decide(batch: Batch, result: BatchResult) -> tuple[int, dict[str, Any], int | None]:
    """(status, body, Retry-After) once the broker answered for every record of ``batch``."""
    if result.failed == 0:
        return 202, {"accepted": result.delivered, **rejects(batch)}, None
    status, retry = (429, RETRY_AFTER_BUSY) if result.queue_full else (503, RETRY_AFTER_UNAVAILABLE)
    body = {
        "error": (
            f"{result.failed} of {len(batch.records)} events were not acknowledged by Kafka"
            f" ({result.first_error}); retry the whole request: events are deduplicated by deviceId and seq"
        ),
        "accepted": 0,
        **rejects(batch),
    }
    return status, body, retry


def admit(
    cfg: PipelineConfig | None,
    producer: EventProducer | None,
    draining: bool,
    ring: KeyRing,
    authorization: str | None,
) -> Answer | None:
    """None when a request may go on; else the 503, 401 or 403 it gets before its body is read."""
    if cfg is None or producer is None or draining:
        reason = "shutting down" if draining else "the pipeline config is not loaded yet"
        return Answer(503, {"error": f"not ready: {reason}"}, RETRY_AFTER_UNAVAILABLE)
    auth = ring.authenticate(authorization, cfg.tenant, cfg.pipeline)
    if auth is AuthResult.OK:
        return None
    if auth is AuthResult.FORBIDDEN:
        return Answer(403, {"error": f"this API key may not post to pipeline {cfg.tenant}/{cfg.pipeline}"})
    missing = auth is AuthResult.MISSING
    msg = "missing API key: send Authorization: Bearer <key>" if missing else "unknown API key"
    return Answer(401, {"error": msg}, headers={"WWW-Authenticate": 'Bearer realm="alertpipe"'})


def too_large(length: int | None, limit: int) -> Answer:
    size = f"{length} bytes" if length is not None else "the body"
    return Answer(
        413,
        {"error": f"{size} is over the limit of {limit} bytes: send smaller batches"},
        headers={"Connection": "close"},
    )


def _at_ingest(cfg: PipelineConfig) -> bool:
    return cfg.event_schema is not None and cfg.event_schema.validate_at == "ingest"


async def publish(
    items: list[Any],
    lines: Sequence[int] | None,
    cfg: PipelineConfig,
    producer: EventProducer,
    metrics: IngestorMetrics,
    now_ms: int,
    schemas: SchemaSet | None = None,
    tracing: Tracing = Tracing.OFF,
    traceparent: str | None = None,
) -> Answer:
    """Validate ``items`` as events of the pipeline's tenant, produce the valid ones, and answer once
    Kafka acknowledged them (202), or refused them (429/503), or none was valid (400).

    With tracing on, a sampled request is one ``alertpipe.ingest`` span (under the client's
    ``traceparent`` when it sent one), whose context rides in the header of every record produced."""
    if not tracing.enabled:
        return await _publish(items, lines, cfg, producer, metrics, now_ms, schemas, None)
    span = tracing.start("alertpipe.ingest", traceparent, root=True, kind=SpanKind.SERVER,
                         attributes={"alertpipe.tenant": cfg.tenant, "alertpipe.pipeline": cfg.pipeline})
    if span is None:
        return await _publish(items, lines, cfg, producer, metrics, now_ms, schemas, None)
    try:
        answer = await _publish(items, lines, cfg, producer, metrics, now_ms, schemas, tracing.headers(span))
    except BaseException as exc:
        span.record_exception(exc)
        raise
    else:
        batch = answer.batch
        span.set_attributes({
            "http.response.status_code": answer.status,
            "alertpipe.events.accepted": int(answer.body.get("accepted", 0)),
            "alertpipe.events.rejected": len(batch.rejects) if batch is not None else 0,
            "messaging.destination.name": cfg.kafka.topics.events,
        })
        if answer.status >= 500:
            Tracing.error(span, str(answer.body.get("error", "")))
    finally:
        span.end()
    return answer


async def _publish(
    items: list[Any],
    lines: Sequence[int] | None,
    cfg: PipelineConfig,
    producer: EventProducer,
    metrics: IngestorMetrics,
    now_ms: int,
    schemas: SchemaSet | None,
    headers: HeaderList | None,
) -> Answer:
    ingest = cfg.ingest
    batch = build_batch(
        items, list(lines) if lines is not None else None, cfg.tenant, now_ms,
        max_event_bytes=ingest.max_event_bytes,
        max_future_skew_ms=round(parse_duration(ingest.max_future_skew) * 1000),
        check=schemas.check if schemas and _at_ingest(cfg) else None,
    )
    m = metrics
    m.batch_size.observe(batch.total)
    if batch.rejects:
        m.rejected.labels("invalid").inc(len(batch.rejects))
    if not batch.records:
        err = "no valid events in the request" if batch.total else "no events in the request"
        return Answer(400, {"error": err, "accepted": 0, **rejects(batch)}, batch=batch)
    if not producer.ready:
        return Answer(
            503, {"error": f"Kafka is unavailable: {producer.not_ready_reason}"}, RETRY_AFTER_UNAVAILABLE
        )
    m.inflight.set(producer.inflight)
    try:
        result = await producer.send(batch.records, cfg.kafka.topics.events, headers)
    except QueueFull as exc:
        m.rejected.labels("backpressure").inc(len(batch.records))
        return Answer(429, {"error": f"busy: {exc}; retry later"}, RETRY_AFTER_BUSY, batch=batch)
    except ProducerNotReady as exc:
        m.rejected.labels("backpressure").inc(len(batch.records))
        return Answer(503, {"error": f"Kafka is unavailable: {exc}"}, RETRY_AFTER_UNAVAILABLE, batch=batch)
    m.inflight.set(producer.inflight)
    m.produce_latency.observe(result.seconds)
    if result.delivered and not result.failed:
        m.accepted.inc(result.delivered)
    elif result.failed:
        m.rejected.labels("unacknowledged").inc(len(batch.records))
        logger.warning(
            "%d of %d events not acknowledged: %s", result.failed, len(batch.records), result.first_error
        )
    status, obj, retry = decide(batch, result)
    return Answer(status, obj, retry, batch=batch)
