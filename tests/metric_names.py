"""The metric names the code exports and the ones the chart's rules and dashboard query: the code's
come from the real registries (every family, labelled or not, with the sample names Prometheus sees:
``_total``, ``_bucket``/``_sum``/``_count``), the queries' from their PromQL text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "charts" / "alertpipe" / "files" / "prometheus" / "alertpipe-rules.yaml"
DASHBOARD = ROOT / "charts" / "alertpipe" / "files" / "grafana" / "alertpipe-tenant.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every target
_NAME = re.compile(r"(?<![A-Za-z0-9_:])(alertpipe_[a-z0-9_]+|up)(?![A-Za-z0-9_:])")
_RECORDED = re.compile(r"(?<![A-Za-z0-9_:])(alertpipe:[a-z0-9_:]+)")

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
}


def _registries() -> list[CollectorRegistry]:
    # importing the modules registers their module-level metrics in the default registry
    import alertpipe.operator.metrics  # noqa: F401
    import alertpipe.workers.deliverer.metrics  # noqa: F401
    import alertpipe.workers.history.sink  # noqa: F401
    from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
    from alertpipe.workers.gc_policy import GcPauses
    from alertpipe.workers.ingestor.metrics import IngestorMetrics

    gc_pauses = CollectorRegistry()  # every worker's CLI adds GcPauses to the registry it serves
    GcPauses(gc_pauses, "t")
    return [REGISTRY, EvaluatorMetrics("t").registry, IngestorMetrics().registry, gc_pauses]


def code_metric_names() -> set[str]:
    names: set[str] = set()
    for registry in _registries():
        for family in registry.collect():
            names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def histogram_bounds() -> dict[str, set[float]]:
    """Bucket upper bounds per histogram (``le`` values a query may name), from the Histogram
    objects themselves (a labelled one has no sample to read them from before its first use)."""
    out: dict[str, set[float]] = {}
    for registry in _registries():
        for collector in list(registry._collector_to_names):
            if isinstance(collector, Histogram):
                out[f"{collector._name}_bucket"] = {float(b) for b in collector._upper_bounds}
    return out


def rule_exprs() -> Iterator[tuple[str, str]]:
    """(rule name, expr) of every rule in the chart's rule file."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every query of the dashboard: panels, annotations, variables."""
    d = dashboard()
    for panel in d["panels"]:
        for t in panel.get("targets", []):
            yield f"panel {panel['title']!r} {t['refId']}", t["expr"]
    for a in d["annotations"]["list"]:
        yield f"annotation {a['name']!r}", a["expr"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            yield f"variable {v['name']!r}", v["query"]["query"]


def names_in(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def recorded_in(expr: str) -> set[str]:
    return set(_RECORDED.findall(expr))
