"""Every series the chart's PrometheusRule and Grafana dashboard query is one the code exports (a
renamed metric breaks this test, not an alert in production), and the dashboard is well formed."""

from __future__ import annotations

import re

import pytest

from tests.metric_names import (
    PROMETHEUS_OWN,
    code_metric_names,
    dashboard,
    dashboard_exprs,
    histogram_bounds,
    names_in,
    recorded_in,
    recorded_names,
    rule_exprs,
)

pytestmark = pytest.mark.unit

CODE = code_metric_names()


def test_the_code_names_are_read_from_the_real_registries() -> None:
    assert {"alertpipe_e2e_latency_seconds_bucket", "alertpipe_deliverer_dead_letters_total",
            "alertpipe_evaluator_consumer_lag_messages", "alertpipe_ingestor_events_accepted_total",
            "alertpipe_operator_pipeline_config_revision_info"} <= CODE
    assert "alertpipe_deliverer_dead_letters" not in CODE  # a counter is only seen as ..._total


def test_names_in_finds_metrics_but_not_recorded_series() -> None:
    expr = 'sum(rate(alertpipe_x_total{a="b"}[5m])) / alertpipe:y:ratio_rate5m and up == 1'
    assert names_in(expr) == {"alertpipe_x_total", "up"}
    assert recorded_in(expr) == {"alertpipe:y:ratio_rate5m"}


@pytest.mark.parametrize(("name", "expr"), list(rule_exprs()), ids=[n for n, _ in rule_exprs()])
def test_rule_queries_name_existing_series(name: str, expr: str) -> None:
    assert names_in(expr) - CODE - PROMETHEUS_OWN == set()
    assert recorded_in(expr) <= recorded_names()


@pytest.mark.parametrize(("where", "expr"), list(dashboard_exprs()), ids=[w for w, _ in dashboard_exprs()])
def test_dashboard_queries_name_existing_series(where: str, expr: str) -> None:
    assert names_in(expr), f"{where} queries no alertpipe series"
    assert names_in(expr) - CODE - PROMETHEUS_OWN == set()


def test_every_bucket_a_query_names_exists() -> None:
    bounds = histogram_bounds()
    exprs = [e for _, e in rule_exprs()] + [e for _, e in dashboard_exprs()]
    named = re.findall(r'(alertpipe_[a-z0-9_]+_bucket)\{[^}]*le="([^"]+)"', "\n".join(exprs))
    assert named
    for metric, le in named:
        assert float(le) in bounds[metric], f"{metric} has no bucket le={le}"


def test_dashboard_is_per_tenant_and_well_formed() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "namespace", "pipeline"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert 'namespace="$namespace"' in t["expr"] and 'pipeline="$pipeline"' in t["expr"], t["expr"]
    titles = " / ".join(p["title"] for p in d["panels"]).lower()
    for want in ("events in", "alerts out", "lag", "latency", "delivery success", "dead letters"):
        assert want in titles
    exprs = " ".join(t["expr"] for p in d["panels"] for t in p["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert {a["name"] for a in d["annotations"]["list"]} == {"Scaling", "Canary"}
