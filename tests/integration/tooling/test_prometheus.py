"""The chart's alerting rules under `promtool` (check, and the unit tests in
tests/prometheus/alertpipe-rules.test.yaml), and what the chart renders of them, the PodMonitor and
the Grafana dashboard."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.tooling.helm import CHART, ROOT, one, template
from tests.promtool import check_metrics, find_promtool

pytestmark = [pytest.mark.integration, pytest.mark.tooling]  # runs promtool and `helm template`

RULES = CHART / "files" / "prometheus" / "alertpipe-rules.yaml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alertpipe-rules.test.yaml"
NO_CRDS = {"crds": {"enabled": False}}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(find_promtool()), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)


def test_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    out = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_promtool_test() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    tested = {a["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for a in t.get("alert_rule_test", [])}
    assert alerts == tested


def test_promtool_check_metrics_flags_a_badly_named_counter() -> None:
    """The lint the e2e test runs on the workers' real /metrics does find problems."""
    code, says = check_metrics("# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests 1\n")
    assert code != 0 and "_total" in says


def test_chart_renders_rule_podmonitor_and_dashboard_behind_values(helm: Path) -> None:
    kinds = {d["kind"] for d in template(helm, NO_CRDS)}
    assert not kinds & {"PrometheusRule", "PodMonitor"}
    on = {"enabled": True}
    values = {**NO_CRDS, "metrics": {"prometheusRule": {**on, "labels": {"release": "prom"}},
                                     "podMonitor": on, "grafanaDashboard": on}}
    docs = template(helm, values)
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} == {"metrics", "http"}
    targets = {r["targetLabel"] for e in pm["spec"]["podMetricsEndpoints"] for r in e["relabelings"]}
    assert targets == {"pipeline", "component"}
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "grafana" / "alertpipe-tenant.json").read_text())
    assert json.loads(cm["data"]["alertpipe-tenant.json"]) == shipped


def test_podmonitor_watches_only_the_operators_namespaces(helm: Path) -> None:
    values = {**NO_CRDS, "operator": {"watchNamespaces": ["team-a", "team-b"]},
              "metrics": {"podMonitor": {"enabled": True}}}
    pm = one(template(helm, values), "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
