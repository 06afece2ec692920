"""The operator's Prometheus metrics (``alertpipe_operator_*``); labels are bounded (kind, result, ...)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ERRORS",
    "EVENTS",
    "PIPELINES",
    "PIPELINE_RECONCILED",
    "QUEUE_DEPTH",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "RULES",
    "WRITES",
]

RECONCILES = Counter(
    "alertpipe_operator_reconciles_total",
    "Reconciles by kind and result (ok, error, invalid).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "alertpipe_operator_reconcile_duration_seconds",
    "Duration of one reconcile.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ERRORS = Counter(
    "alertpipe_operator_errors_total", "Reconcile errors by kind and reason.", ["kind", "reason"]
)
WRITES = Counter(
    "alertpipe_operator_writes_total", "Writes to the Kubernetes API by kind and verb.", ["kind", "verb"]
)
EVENTS = Counter("alertpipe_operator_events_total", "Kubernetes Events emitted, by reason.", ["reason"])
PIPELINE_RECONCILED = Gauge(
    "alertpipe_operator_pipeline_reconciled_timestamp_seconds",
    "When the last full reconcile of each pipeline completed (Unix time).",
    ["namespace", "pipeline"],
)
PIPELINES = Gauge("alertpipe_operator_pipelines", "AlertPipelines the operator watches.")
RULES = Gauge("alertpipe_operator_rules", "AlertRules the operator watches.")
QUEUE_DEPTH = Gauge("alertpipe_operator_queue_depth", "Reconciles waiting to run.")
