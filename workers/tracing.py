"""OpenTelemetry traces of the workers (``spec.tracing``): one tracer provider per worker, exporting
over OTLP/HTTP, and the W3C trace context (``traceparent``) carried in Kafka record headers from
ingest to evaluation to delivery, and on to the tenant's webhook.

Only the ingestor starts traces: a request is sampled by ``sampleRatio``, or follows a sampled
``traceparent`` the client sent. Its context goes into the header of every record of the request.
The evaluator and the deliverer make a span only for a record whose header carries a sampled
context, so the whole pipeline follows the ingest decision. Off (no ``spec.tracing``, the default)
costs one boolean test per request or record: ``Tracing.OFF`` holds no provider and nothing here is
called past ``enabled``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from alertpipe.workers.config.models import SecretKeyRef
from alertpipe.workers.config.tracing import TracingSpec
from alertpipe.workers.errors import AlertpipeError

__all__ = [
    "OUTGOING_TRACEPARENT",
    "TRACEPARENT",
    "HeaderList",
    "Span",
    "SpanKind",
    "Tracing",
    "TracingHolder",
    "collector_headers",
    "format_traceparent",
    "parse_traceparent",
    "traceparent_of",
]

logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
HeaderList = list[tuple[str, str | bytes | None]]
EXPORT_DELAY_MS = 1000  # how long a finished span may wait for company before it is exported
SECRET_RETRY_S = 30.0  # a headers Secret that cannot be read yet (not mounted): tried again after this

# The traceparent of the delivery span in flight in this task: a webhook request carries it so the
# tenant's receiver can join the trace. Set only while a traced delivery runs.
OUTGOING_TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "outgoing_traceparent", default=None
)

# version 00: 2 hex version, 32 hex trace id, 16 hex span id, 2 hex flags (W3C Trace Context, level 1)
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


# --- the trace context on the wire ---------------------------------------------------------------


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    """The remote span context a ``traceparent`` value names; None when it is missing or invalid
    (version ff, all-zero ids, a later version with fewer fields are invalid per the W3C spec)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(flags_hex, 16) & 0x01))


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0x01:02x}"


def traceparent_of(headers: Sequence[tuple[str, str | bytes | None]] | None) -> bytes | None:
    """The ``traceparent`` value among a Kafka record's headers (the last one wins), or None."""
    found = None
    for k, v in headers or ():
        if k == TRACEPARENT and v is not None:
            found = v if isinstance(v, bytes) else v.encode()
    return found


def collector_headers(text: str) -> dict[str, str]:
    """Headers for the collector from ``name=value`` pairs separated by commas or newlines
    (OTEL_EXPORTER_OTLP_HEADERS' format: values may be percent-encoded). Raises ValueError naming the
    pair's position, never its value (it is a credential)."""
    out: dict[str, str] = {}
    pairs = [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]
    for i, pair in enumerate(pairs, 1):
        name, sep, value = pair.partition("=")
        name = unquote(name.strip()).lower()
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name):
            raise ValueError(f"header pair {i} is not name=value with a valid header name")
        out[name] = unquote(value.strip())
    return out


# --- one worker's tracer -------------------------------------------------------------------------


class Tracing:
    """One worker's spans. ``enabled`` False (``Tracing.OFF``): no provider, every method a no-op."""

    OFF: Tracing

    def __init__(self, provider: TracerProvider | None = None, spec: TracingSpec | None = None) -> None:
        self.provider = provider
        self.spec = spec
        self.enabled = provider is not None
        self._tracer = provider.get_tracer("alertpipe") if provider is not None else None
        self._ratio = spec.sample_ratio if spec is not None else 0.0
        self._random = random.Random()  # noqa: S311 - sampling, not secrets

    @classmethod
    def build(
        cls,
        spec: TracingSpec,
        *,
        role: str,
        tenant: str,
        pipeline: str,
        headers: Mapping[str, str] | None = None,
        exporter: SpanExporter | None = None,
    ) -> Tracing:
        """A provider for ``role``: spans batched to the OTLP/HTTP endpoint of ``spec`` (or, for tests,
        handed one by one to ``exporter``), sampled by ``spec.sampleRatio`` unless a parent decided."""
        resource = Resource.create(
            {
                "service.name": f"alertpipe-{role}",
                "service.namespace": "alertpipe",
                "service.instance.id": os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                "alertpipe.tenant": tenant,
                "alertpipe.pipeline": pipeline,
            }
        )
        sampler = ParentBased(ALWAYS_ON)
        provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = spec.traces_url()
            otlp = OTLPSpanExporter(endpoint=url, headers=dict(headers or {}), timeout=spec.timeout)
            provider.add_span_processor(BatchSpanProcessor(otlp, schedule_delay_millis=EXPORT_DELAY_MS))
        return cls(provider, spec)

    def start(
        self,
        name: str,
        parent: str | bytes | None = None,
        *,
        root: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        start_ns: int | None = None,
    ) -> Span | None:
        """A recording span under ``parent`` (a traceparent value); None when it is not sampled.

        Without a valid sampled parent, only a ``root`` span (the ingestor's) starts a trace, by the
        ratio; the later stages make none.
        """
        if self._tracer is None:
            return None
        remote = parse_traceparent(parent) if parent is not None else None
        if remote is None:
            if not root or self._random.random() >= self._ratio:
                return None
            ctx: Context | None = Context()
        elif not remote.trace_flags.sampled and not root:
            return None
        else:
            ctx = set_span_in_context(NonRecordingSpan(remote))
        span = self._tracer.start_span(name, ctx, kind=kind, attributes=attributes, start_time=start_ns)
        if not span.is_recording():
            span.end()  # ends nothing recorded; keeps the SDK's bookkeeping even
            return None
        return span

    @staticmethod
    def traceparent(span: Span) -> str:
        return format_traceparent(span.get_span_context())

    @staticmethod
    def headers(span: Span) -> HeaderList:
        """The Kafka record headers that carry ``span``'s context to the next stage."""
        return [(TRACEPARENT, format_traceparent(span.get_span_context()).encode())]

    @staticmethod
    def error(span: Span, message: str) -> None:
        """Mark ``span`` failed, with the first 200 characters of ``message``."""
        span.set_status(Status(StatusCode.ERROR, message[:200]))

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocks up to the export timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


Tracing.OFF = Tracing()


class TracingHolder:
    """The worker's Tracing for the config in force: rebuilt when ``spec.tracing`` changes, the old
    provider flushed and shut down on a thread of its own (the hot path never waits for a collector).
    """

    def __init__(
        self, role: str, secret: Callable[[SecretKeyRef], str] | None = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.role = role
        self._secret = secret
        self._exporter = exporter  # tests: an in-memory exporter instead of OTLP
        self._key: tuple[TracingSpec | None, str, str] | None = None
        self._retry_at = 0.0
        self.current = Tracing.OFF

    @property
    def waiting(self) -> bool:
        """Tracing is asked for but off until its headers Secret can be read: call ``update`` again."""
        return bool(self._retry_at)

    def update(self, spec: TracingSpec | None, tenant: str, pipeline: str) -> Tracing:
        """The Tracing for ``spec``: the current one while nothing changed (and no retry is due)."""
        key = (spec, tenant, pipeline)
        if key == self._key and (not self._retry_at or time.monotonic() < self._retry_at):
            return self.current
        self._key, self._retry_at = key, 0.0
        new = Tracing.OFF
        if spec is not None:
            try:
                headers = self._headers(spec)
            except (AlertpipeError, ValueError) as exc:
                logger.error("tracing stays off until its headers Secret can be read: %s", exc)
                self._retry_at = time.monotonic() + SECRET_RETRY_S
            else:
                new = Tracing.build(spec, role=self.role, tenant=tenant, pipeline=pipeline, headers=headers,
                                    exporter=self._exporter)
                logger.info("tracing to %s (sample ratio %g)", spec.traces_url(), spec.sample_ratio)
        old, self.current = self.current, new
        if old.enabled:
            threading.Thread(target=old.shutdown, name="tracing-shutdown", daemon=True).start()
        return new

    def _headers(self, spec: TracingSpec) -> dict[str, str]:
        ref = spec.headers_secret_ref
        if ref is None:
            return {}
        if self._secret is None:
            raise ValueError(f"no secret reader for tracing.headersSecretRef {ref.name}/{ref.key}")
        try:
            return collector_headers(self._secret(ref))
        except ValueError as exc:
            raise ValueError(f"tracing.headersSecretRef {ref.name}/{ref.key}: {exc}") from None

    def shutdown(self) -> None:
        self.current.shutdown()
        self.current = Tracing.OFF
