"""Prometheus metrics of the ingestor (``alertpipe_ingestor_*``), one registry per server instance.

Labels are bounded: the HTTP status code and a fixed set of reject reasons; the tenant and
pipeline of the process appear once, in ``alertpipe_ingestor_config_info``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestorMetrics"]

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class IngestorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "alertpipe_ingestor_requests_total", "POST /v1/events requests by HTTP status code.",
            ["code"], registry=r,
        )
        self.accepted = Counter(
            "alertpipe_ingestor_events_accepted_total",
            "Events acknowledged by the broker (answered 202).", registry=r,
        )
        self.rejected = Counter(
            "alertpipe_ingestor_events_rejected_total",
            "Events not accepted, by reason (invalid: failed validation; unacknowledged: the broker did"
            " not acknowledge them; backpressure: refused with 429/503 before producing).",
            ["reason"], registry=r,
        )
        self.produce_latency = Histogram(
            "alertpipe_ingestor_produce_latency_seconds",
            "From producing a request's first event to the broker's last acknowledgement.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "alertpipe_ingestor_batch_size_events", "Events per request (valid and invalid).",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.body_bytes = Counter(
            "alertpipe_ingestor_request_body_bytes_total", "Request body bytes read.", registry=r,
        )
        self.inflight = Gauge(
            "alertpipe_ingestor_inflight_events", "Events produced and not yet acknowledged.", registry=r,
        )
        self.broker_up = Gauge(
            "alertpipe_ingestor_broker_up", "1 when the producer reaches the broker and the topic exists.",
            registry=r,
        )
        self.config_info = Gauge(
            "alertpipe_ingestor_config_info", "The loaded PipelineConfig revision (value 1).",
            ["tenant", "pipeline", "revision"], registry=r,
        )
        self.grpc_requests = Counter(
            "alertpipe_ingestor_grpc_requests_total",
            "gRPC Publish calls and PublishStream batches by method and status code.",
            ["method", "code"], registry=r,
        )
        self.key_count = Gauge(
            "alertpipe_ingestor_api_keys", "API keys loaded (of every tenant in the key list).", registry=r,
        )
        for code in ("202", "400", "401", "403", "413", "429", "503"):
            self.requests.labels(code)
        for reason in ("invalid", "unacknowledged", "backpressure"):
            self.rejected.labels(reason)
