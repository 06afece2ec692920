"""The operator's Prometheus metrics (``alertpipe_operator_*``); labels are bounded (kind, result, ...)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONFIG_REVISION",
    "ERRORS",
    "EVENTS",
    "PIPELINES",
    "PIPELINE_RECONCILED",
    "QUEUE_DEPTH",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "RULES",
    "SLO_LATENCY_OBJECTIVE",
    "SLO_SUCCESS_OBJECTIVE",
    "WRITES",
    "forget_config_revision",
    "forget_slo_objective",
    "set_config_revision",
    "set_slo_objective",
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
# The revision the operator wrote to each pipeline's ConfigMap; the workers export the one they
# loaded (alertpipe_<role>_config_revision_info), so a PrometheusRule sees a revision not yet live.
CONFIG_REVISION = Gauge(
    "alertpipe_operator_pipeline_config_revision_info",
    "The PipelineConfig revision in each pipeline's ConfigMap (value 1).",
    ["namespace", "pipeline", "revision"],
)
_revisions: dict[tuple[str, str], str] = {}


def set_config_revision(namespace: str, pipeline: str, revision: str) -> None:
    """One series per pipeline: the revision it should run now."""
    old = _revisions.get((namespace, pipeline))
    if old == revision:
        return
    if old is not None:
        CONFIG_REVISION.remove(namespace, pipeline, old)
    _revisions[(namespace, pipeline)] = revision
    CONFIG_REVISION.labels(namespace, pipeline, revision).set(1)


def forget_config_revision(namespace: str, pipeline: str) -> None:
    old = _revisions.pop((namespace, pipeline), None)
    if old is not None:
        CONFIG_REVISION.remove(namespace, pipeline, old)


# spec.slo of each pipeline, so a dashboard or a rule compares what was measured with what was asked.
SLO_LATENCY_OBJECTIVE = Gauge(
    "alertpipe_operator_slo_objective_latency_seconds",
    "spec.slo.latencyP99 of each pipeline: the e2e latency p99 it must stay at or below.",
    ["namespace", "pipeline"],
)
SLO_SUCCESS_OBJECTIVE = Gauge(
    "alertpipe_operator_slo_objective_success_ratio",
    "spec.slo.successRatio of each pipeline: delivered / (delivered + dead-lettered) at or above.",
    ["namespace", "pipeline"],
)


def set_slo_objective(namespace: str, pipeline: str, latency_p99_s: float, success_ratio: float) -> None:
    SLO_LATENCY_OBJECTIVE.labels(namespace, pipeline).set(latency_p99_s)
    SLO_SUCCESS_OBJECTIVE.labels(namespace, pipeline).set(success_ratio)


def forget_slo_objective(namespace: str, pipeline: str) -> None:
    for gauge in (SLO_LATENCY_OBJECTIVE, SLO_SUCCESS_OBJECTIVE):
        try:
            gauge.remove(namespace, pipeline)
        except KeyError:
            pass
