"""examples/chart/: every values file and the Argo CD Application render with the chart and do what
their comments say, so the examples a platform team copies cannot rot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from alertpipe.operator.models import AlertPipelineSpec, AlertRuleSpec
from tests.integration.tooling.helm import ROOT, of_kind, one, rules_of, template

pytestmark = [pytest.mark.integration, pytest.mark.tooling]  # runs `helm template`

EXAMPLES = ROOT / "examples" / "chart"


def load(name: str) -> dict[str, Any]:
    values = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(values, dict)
    return values


def test_every_example_is_covered() -> None:
    covered = {
        "values-production.yaml",
        "values-namespaced.yaml",
        "values-cert-manager.yaml",
        "argocd-application.yaml",
        "argocd-tenant-application.yaml",
    }
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == covered


def test_production(helm: Path) -> None:
    docs = template(helm, load("values-production.yaml"))
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert (
        dep["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.internal.example/platform/alertpipe:0.1.0"
    )
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert one(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    assert one(docs, "ClusterKopfPeering")
    assert (
        dep["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"]
        == "kubernetes.io/hostname"
    )


def test_namespaced(helm: Path) -> None:
    docs = template(helm, load("values-namespaced.yaml"))
    assert sorted(r["metadata"]["namespace"] for r in of_kind(docs, "Role")) == ["team-a", "team-b"]
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in cluster_role["rules"])
    assert [r for _, r in rules_of(docs) if "secrets" in r["resources"]]


def test_cert_manager(helm: Path) -> None:
    docs = template(helm, load("values-cert-manager.yaml"))
    cert = one(docs, "Certificate")
    assert cert["spec"]["issuerRef"]["kind"] == "ClusterIssuer" and cert["spec"]["duration"] == "2160h"
    assert not of_kind(docs, "Secret") and not of_kind(docs, "Issuer")


def test_argocd_application_values(helm: Path) -> None:
    app = load("argocd-application.yaml")
    source = app["spec"]["source"]
    assert source["path"] == "charts/alertpipe" and (ROOT / source["path"] / "Chart.yaml").is_file()
    docs = template(helm, source["helm"]["valuesObject"])
    # Rendered without a cluster (as Argo CD does): the webhook certificate must not be chart-generated.
    assert not of_kind(docs, "Secret")
    assert one(docs, "Certificate")
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert one(docs, "ConfigMap")["metadata"]["name"].endswith("-argocd-health")


def test_argocd_tenant_application_syncs_valid_manifests_after_the_operator() -> None:
    platform, tenant = load("argocd-application.yaml"), load("argocd-tenant-application.yaml")
    wave = "argocd.argoproj.io/sync-wave"
    assert int(tenant["metadata"]["annotations"][wave]) > int(platform["metadata"]["annotations"][wave])
    options = tenant["spec"]["syncPolicy"]["syncOptions"]
    assert "ServerSideApply=true" in options and "SkipDryRunOnMissingResource=true" in options
    source = tenant["spec"]["source"]
    include = source["directory"]["include"].strip("{}").split(",")
    files = sorted({p for pattern in include for p in (ROOT / source["path"]).glob(pattern)})
    kinds = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            model = AlertPipelineSpec if doc["kind"] == "AlertPipeline" else AlertRuleSpec
            model.model_validate(doc["spec"])
            kinds.append(doc["kind"])
    assert kinds.count("AlertPipeline") == 1 and kinds.count("AlertRule") >= 3
