# mypy: disable-error-code="union-attr, index, arg-type"
"""engine: keda against the real apiserver with KEDA's own CRDs: the operator writes a ScaledObject
the apiserver accepts (and validates: a broken one is refused), stops scaling the role itself, and
removes the ScaledObject when the engine switches back to the operator's own."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from devstack.pipeline import apply_keda_crds, wait_for

from .conftest import OperatorProcess
from .helpers import Cluster, pipeline_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def keda_crds(api: client.ApiClient) -> None:
    apply_keda_crds(api)


AUTO = {
    "enabled": True,
    "engine": "keda",
    "minReplicas": 1,
    "maxReplicas": 4,
    "lagThreshold": 500,
    "scaleDown": {
        "stabilizationWindowSeconds": 60,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
    },
}


def evaluator_scaling(k: Cluster, name: str) -> dict[str, Any]:
    return ((k.get("alertpipelines", name).get("status") or {}).get("scaling") or {}).get("evaluator") or {}


def scaled_object(co: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = co.get_namespaced_custom_object(  # type: ignore[assignment]
            "keda.sh", "v1alpha1", ns, "scaledobjects", name
        )
        return obj
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_keda_engine_without_keda_says_so(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str
) -> None:
    """A cluster without KEDA's CRDs: the reconcile goes on, status and an Event say what to do.

    First in this module, before KEDA's CRDs are installed (they are cluster-wide)."""
    ext = client.ApiextensionsV1Api(k.co.api_client)
    names = [c.metadata.name for c in ext.list_custom_resource_definition().items]
    if "scaledobjects.keda.sh" in names:
        pytest.skip("KEDA's CRDs are installed in this session's cluster")
    k.create(pipeline_body("nk", kafka_bootstrap, evaluator={"autoscaling": AUTO}))
    wait_for(lambda: k.events("KedaNotInstalled"), "the KedaNotInstalled Event", 60)
    entry = evaluator_scaling(k, "nk")
    assert "KEDA's CRDs are not installed" in entry["reason"]


def test_keda_engine_writes_a_scaled_object_and_hands_over_replicas(
    k: Cluster, keda_crds: None, operator: OperatorProcess, kafka_bootstrap: str, unique: str
) -> None:
    k.create(pipeline_body("kp", kafka_bootstrap, evaluator={"autoscaling": AUTO}))
    so = wait_for(lambda: scaled_object(k.co, k.ns, "kp-evaluator"), "the ScaledObject", 60)
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == "kp-evaluator"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    trigger = spec["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == f"alertpipe-{k.ns}-kp-evaluator"
    assert trigger["metadata"]["topic"] == f"{k.ns}.kp.events"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 30}]
    wait_for(lambda: evaluator_scaling(k, "kp"), "status.scaling.evaluator", 30)
    entry = evaluator_scaling(k, "kp")
    assert entry["engine"] == "keda" and "KEDA ScaledObject kp-evaluator" in entry["reason"]

    # The HPA (KEDA's) owns replicas now: a reconcile keeps what it set instead of the spec's.
    k.apps.patch_namespaced_deployment("kp-evaluator", k.ns, {"spec": {"replicas": 3}})
    k.patch_spec(
        "alertpipelines", "kp", {"evaluator": {"replicas": 1, "autoscaling": AUTO}, "allowedLateness": "6s"}
    )
    wait_for(lambda: (k.config("kp") or {}).get("allowedLateness") == "6s", "the reconcile of the edit", 30)
    assert k.apps.read_namespaced_deployment("kp-evaluator", k.ns).spec.replicas == 3

    # The apiserver validates with KEDA's schema: a ScaledObject without its target is refused.
    with pytest.raises(client.ApiException) as refused:
        k.co.create_namespaced_custom_object(
            "keda.sh", "v1alpha1", k.ns, "scaledobjects",
            {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": f"bad-{unique}"},
             "spec": {"triggers": [{"type": "kafka", "metadata": {}}]}},
        )  # fmt: skip
    assert refused.value.status == 422 and "scaleTargetRef" in str(refused.value.body)

    # Back to the operator's own engine: the ScaledObject goes and the timer takes over.
    k.patch_spec("alertpipelines", "kp", {"evaluator": {"autoscaling": {**AUTO, "engine": "operator"}}})
    wait_for(lambda: scaled_object(k.co, k.ns, "kp-evaluator") is None, "the ScaledObject removed", 30)
    wait_for(
        lambda: (
            (evaluator_scaling(k, "kp").get("engine"), evaluator_scaling(k, "kp").get("lag"))
            == ("operator", 0)
        ),
        "the operator's scaler observing lag",
        60,
    )
    assert any("deleted ScaledObject kp-evaluator" in m for m in k.events("ScaledObjectRemoved"))
