# mypy: disable-error-code="index, union-attr, arg-type, no-any-return"
"""HA through Kopf peering: two operators, one active; when it goes, the other takes over."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devstack.pipeline import wait_for

from .conftest import ROOT
from .helpers import Cluster, pipeline_body

pytestmark = pytest.mark.integration


def _reconciles(text: str) -> float:
    m = re.search(r'alertpipe_operator_reconciles_total\{kind="AlertPipeline",result="ok"\} ([0-9.]+)', text)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def peering(api: client.ApiClient, namespace: str) -> str:
    """Kopf's peering CRDs (as the chart ships them) and a KopfPeering object in the namespace."""
    ext = client.ApiextensionsV1Api(api)
    path = ROOT / "charts" / "alertpipe" / "crds" / "kopf-peering.yaml"
    if not path.exists():
        pytest.skip("the chart's Kopf peering CRDs are not in this checkout")
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if not doc:
            continue
        try:
            ext.create_custom_resource_definition(doc)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    co = client.CustomObjectsApi(api)

    def create() -> bool:
        try:
            co.create_namespaced_custom_object(
                "kopf.dev",
                "v1",
                namespace,
                "kopfpeerings",
                {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "alertpipe"}},
            )
            return True
        except client.ApiException as exc:
            if exc.status == 409:
                return True
            if exc.status == 404:  # CRD not served yet
                return False
            raise

    wait_for(create, "KopfPeering object", 30, every=0.2)
    return "alertpipe"


def test_two_replicas_one_active_then_failover(
    k: Cluster, peering: str, operator_factory: Any, kafka_bootstrap: str
) -> None:
    common = ("--peering", peering, "--peering-lifetime", "5")
    active = operator_factory(*common, "--priority", "200")
    standby = operator_factory(*common, "--priority", "100")

    k.create(pipeline_body("first", kafka_bootstrap))
    wait_for(lambda: k.config("first"), "config of the first pipeline", 60)
    wait_for(
        lambda: _reconciles(active.http_get(active.metrics_port, "/metrics")[1]) > 0, "active reconciled", 30
    )
    assert _reconciles(standby.http_get(standby.metrics_port, "/metrics")[1]) == 0, (
        "standby must not reconcile"
    )

    active.stop()  # Kopf removes its peering record on a clean exit; a crash would take --peering-lifetime
    k.create(pipeline_body("second", kafka_bootstrap))
    wait_for(lambda: k.config("second"), "the standby taking over (config of the second pipeline)", 60)
    assert _reconciles(standby.http_get(standby.metrics_port, "/metrics")[1]) > 0
