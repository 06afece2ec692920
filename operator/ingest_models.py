"""``spec.ingest`` of an AlertPipeline: the contract's IngestSettings plus how the ingestor's gRPC
listener is exposed (``grpc``), kept beside models.py like the rollout's and the SLO's models.

``grpc`` is a matter of the Deployment and the Service (a container port, process flags, a TLS
Secret mounted), not of the config document: compile.py hands the workers the contract part only
(:meth:`IngestSpec.settings`), so opening the port never changes the config revision.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.models import IngestSettings
from alertpipe.workers.config.refs import Name

__all__ = [
    "GRPC_DEFAULT_PORT", "HTTP_PORT", "TLS_CERT_KEY", "TLS_KEY_KEY", "GrpcIngest", "GrpcTls", "IngestSpec",
]

HTTP_PORT = 8080  # the ingestor's HTTP container port (POST /v1/events, /healthz, /readyz, /metrics)
GRPC_DEFAULT_PORT = 9090
TLS_CERT_KEY = "tls.crt"  # the keys of a kubernetes.io/tls Secret (what cert-manager writes)
TLS_KEY_KEY = "tls.key"


class GrpcTls(Model):
    """TLS of the gRPC listener from a ``kubernetes.io/tls`` Secret (keys tls.crt and tls.key)."""

    secret_name: Name = Field(
        description="Secret in the pipeline's namespace with tls.crt (PEM chain) and tls.key (PEM key),"
        " e.g. a cert-manager Certificate's; mounted into the ingestor pods, re-read on restart.",
    )


class GrpcIngest(Model):
    """gRPC ingest (alertpipe.ingest.v1.Ingest) beside HTTP: container port, Service port ``grpc``."""

    enabled: bool = Field(False, description="Open the gRPC listener (container port and Service port grpc).")
    port: int = Field(
        GRPC_DEFAULT_PORT, ge=1024, le=65535,
        description="Container and Service port of the gRPC listener (not 8080, the HTTP port).",
    )
    tls: GrpcTls | None = Field(
        None, description="Serve TLS only (plaintext is refused); omitted: plaintext (a mesh may add mTLS)."
    )

    @model_validator(mode="after")
    def _not_the_http_port(self) -> GrpcIngest:
        if self.port == HTTP_PORT:
            raise ValueError(f"grpc.port {HTTP_PORT} is the ingestor's HTTP port; pick another")
        return self


class IngestSpec(IngestSettings):
    """The ingestor's settings: the contract's (body limits, API keys) and its gRPC listener."""

    grpc: GrpcIngest = Field(default_factory=GrpcIngest, description="gRPC ingest listener (off by default).")

    def settings(self) -> IngestSettings:
        """The part the workers read from the config document (everything but ``grpc``)."""
        return IngestSettings.model_validate(self.model_dump(exclude={"grpc"}))
