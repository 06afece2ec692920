"""``spec.tracing``: where the workers send OpenTelemetry spans (OTLP over HTTP) and how many requests
start a trace. The trace context itself rides in Kafka record headers (``alertpipe.workers.tracing``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.refs import SecretKeyRef

__all__ = ["DEFAULT_SAMPLE_RATIO", "TRACES_PATH", "TracingSpec"]

DEFAULT_SAMPLE_RATIO = 0.01
TRACES_PATH = "/v1/traces"  # OTLP/HTTP's path for traces, added to an endpoint that names no path


class TracingSpec(Model):
    """OpenTelemetry traces across ingest → evaluate → deliver; present means on."""

    endpoint: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="OTLP/HTTP (protobuf) URL of a collector, e.g. http://otel-collector.monitoring:4318;"
        " without a path /v1/traces is added, with one it is used as written.",
    )
    sample_ratio: float = Field(
        DEFAULT_SAMPLE_RATIO,
        ge=0.0,
        le=1.0,
        description="Share of ingest requests that start a trace (0..1). A request whose traceparent"
        " header is sampled is always traced; evaluator and deliverer follow the ingest decision.",
    )
    headers_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding headers for the collector (e.g. authorization), as"
        " name=value pairs separated by commas or newlines (OTEL_EXPORTER_OTLP_HEADERS' format).",
    )
    timeout: float = Field(10.0, gt=0, le=60, description="Seconds one export request may take.")

    @field_validator("endpoint")
    @classmethod
    def _has_host(cls, v: str) -> str:
        if not urlsplit(v).hostname:
            raise ValueError(f"{v!r} names no host")
        return v

    def traces_url(self) -> str:
        """The URL spans are posted to."""
        parts = urlsplit(self.endpoint)
        if parts.path in ("", "/"):
            return self.endpoint.rstrip("/") + TRACES_PATH
        return self.endpoint
