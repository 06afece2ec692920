"""Prometheus metrics of the deliverer (``alertpipe_deliverer_*``); labels tenant and channel only."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "CIRCUIT_STATE",
    "CONFIG_REVISION",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DELIVERY_ERRORS",
    "DELIVERY_LATENCY",
    "E2E_LATENCY",
    "INFLIGHT",
    "OUTCOMES",
    "PARKED",
    "PAUSED",
    "READ_DELAY",
    "RETRIES",
    "RETRY_WAITING",
    "SEND_LATENCY",
    "child",
]

ATTEMPTS = Counter(
    "alertpipe_deliverer_attempts_total",
    "Send attempts by channel and outcome (delivered, retry, failed).",
    ["tenant", "channel", "outcome"],
)
OUTCOMES = Counter(
    "alertpipe_deliverer_deliveries_total",
    "Terminal delivery decisions by channel (delivered, dead_lettered, muted, skipped_delivered, ...).",
    ["tenant", "channel", "decision"],
)
RETRIES = Counter("alertpipe_deliverer_retries_total", "Retries scheduled.", ["tenant", "channel"])
DEAD_LETTERS = Counter(
    "alertpipe_deliverer_dead_letters_total",
    "Deliveries written to the dead-letter topic.",
    ["tenant", "channel"],
)
CONSUMER_LAG = Gauge(
    "alertpipe_deliverer_consumer_lag_messages",
    "Alerts-topic records not yet terminal on the partitions this process owns: unread or in flight.",
    ["tenant"],
)
DELIVERY_ERRORS = Counter(
    "alertpipe_deliverer_delivery_errors_total",
    "Deliveries that failed with an error no step expected and were started again (see the log).",
    ["tenant"],
)
DELIVERY_LATENCY = Histogram(
    "alertpipe_deliverer_delivery_latency_seconds",
    "From the alert's produce time on the alerts topic to the receiver's 2xx.",
    ["tenant", "channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
# The product's headline: from the triggering event to the receiver's 2xx. ``basis`` ingest: the
# event's Kafka timestamp at the ingestor (wall clock, comparable); event: the event's own ``ts``
# (includes the device's clock skew and anything held by the lateness bound, e.g. absence timers).
E2E_LATENCY = Histogram(
    "alertpipe_e2e_latency_seconds",
    "From the triggering event (basis: ingest time or event time) to the receiver's 2xx.",
    ["pipeline", "channel", "basis"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
READ_DELAY = Histogram(
    "alertpipe_deliverer_read_delay_seconds",
    "From the alert's produce time on the alerts topic to the deliverer reading it.",
    ["tenant"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 60),
)
SEND_LATENCY = Histogram(
    "alertpipe_deliverer_send_seconds",
    "Duration of one send attempt.",
    ["tenant", "channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CIRCUIT_STATE = Gauge(
    "alertpipe_deliverer_circuit_state",
    "Circuit breaker: 0 closed, 1 half-open, 2 open.",
    ["tenant", "channel"],
)
PARKED = Counter(
    "alertpipe_deliverer_parked_total",
    "Deliveries written to the retry topic for a later attempt (failing channel or open circuit).",
    ["tenant", "channel"],
)
RETRY_WAITING = Gauge(
    "alertpipe_deliverer_retry_waiting",
    "Parked deliveries read back from the retry topic and waiting for their not-before time.",
    ["tenant"],
)
INFLIGHT = Gauge("alertpipe_deliverer_queue_depth", "Alerts read and not yet terminal.", ["tenant"])
PAUSED = Gauge("alertpipe_deliverer_paused", "1 while delivery is stopped by the kill switch.", ["tenant"])
CONFIG_REVISION = Gauge(
    "alertpipe_deliverer_config_revision_info",
    "The loaded PipelineConfig revision (value 1).",
    ["tenant", "pipeline", "revision"],
)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: prometheus_client's lookup is costly on the hot path."""
    k = (id(metric), labels)
    c = _children.get(k)
    if c is None:
        c = _children[k] = metric.labels(*labels)
    return c
