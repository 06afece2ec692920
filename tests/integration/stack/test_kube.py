"""The devstack's control plane is real: CEL validation, controllers on kwok nodes, garbage collection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devstack.kube import kube_client
from devstack.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = kube_client(kubeconfig)
    try:
        yield c
    finally:
        c.close()


def widget_crd(group: str) -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 1},
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.minReplicas <= self.maxReplicas",
                "message": "minReplicas must not exceed maxReplicas",
                "fieldPath": ".minReplicas",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}},
                }
            ],
        },
    }


def crd_established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conds = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conds)


def test_crd_cel_rule_rejects_with_field_path_and_stores_valid(
    api: client.ApiClient, namespace: str, unique: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    group = f"{unique}.smoke.alertpipe.io"
    crd = client.V1CustomResourceDefinition.from_dict(widget_crd(group))
    assert crd is not None
    ext.create_custom_resource_definition(crd)
    try:
        wait_until(lambda: crd_established(ext, f"widgets.{group}"), "CRD Established", 60)
        co = client.CustomObjectsApi(api)

        def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }

        with pytest.raises(client.ApiException) as bad:
            co.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget("bad", 5, 2))
        assert bad.value.status == 422
        body = json.loads(bad.value.body or "{}")
        causes = body["details"]["causes"]
        assert any(c["field"] == "spec.minReplicas" for c in causes), causes
        assert "minReplicas must not exceed maxReplicas" in body["message"]

        # the structural schema is enforced too (type and minimum)
        with pytest.raises(client.ApiException) as typed:
            co.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget("neg", -1, 2))
        assert "spec.minReplicas" in (typed.value.body or "")

        co.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget("good", 1, 3))
        stored: Any = co.get_namespaced_custom_object(group, "v1", namespace, "widgets", "good")
        assert stored["spec"] == {"minReplicas": 1, "maxReplicas": 3}
        assert stored["metadata"]["uid"]
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def deployment(name: str, replicas: int) -> client.V1Deployment:
    d = client.V1Deployment.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/nothing:1"}]},
                },
            },
        }
    )
    assert d is not None
    return d


def test_deployment_becomes_available_on_kwok_nodes(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("web", 2))

    def available() -> bool:
        st = apps.read_namespaced_deployment_status("web", namespace).status
        return st is not None and st.available_replicas == 2

    wait_until(available, "deployment web availableReplicas=2", 120)
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    kwok_nodes = {
        n.metadata.name
        for n in core.list_node().items
        if n.metadata
        and n.metadata.annotations
        and n.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
    }
    for p in pods:
        assert p.spec is not None and p.spec.node_name in kwok_nodes  # placed by the real scheduler
        assert p.status is not None and p.status.phase == "Running"
        assert p.metadata is not None and p.metadata.owner_references  # made by the ReplicaSet controller


def test_deleting_an_owner_garbage_collects_its_dependents(api: client.ApiClient, namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    assert owner.metadata is not None and owner.metadata.uid
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref]), string_data={"k": "v"}
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment("gc", 1))
    wait_until(
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=gc").items) == 1, "gc pod", 60
    )

    core.delete_namespaced_config_map("owner", namespace)
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")

    def gone() -> bool:
        secrets = [s.metadata.name for s in core.list_namespaced_secret(namespace).items if s.metadata]
        rsets = apps.list_namespaced_replica_set(namespace).items
        pods = core.list_namespaced_pod(namespace, label_selector="app=gc").items
        return "dependent" not in secrets and not rsets and not pods

    wait_until(gone, "dependents garbage-collected", 120)


def test_fake_nodes_keep_renewed_leases_and_stay_schedulable(api: client.ApiClient) -> None:
    """Without Leases the node lifecycle controller marks every fake node NotReady after its grace
    period and taints it: pods created then sit unschedulable (this once failed a helm --wait in CI)."""
    core, coord = client.CoreV1Api(api), client.CoordinationV1Api(api)
    nodes = [n.metadata.name for n in core.list_node().items if n.metadata and n.metadata.name]
    assert nodes

    def renew_times() -> dict[str, Any]:
        leases = coord.list_namespaced_lease("kube-node-lease").items
        return {str(ls.metadata.name): ls.spec.renew_time for ls in leases if ls.metadata and ls.spec}

    wait_until(lambda: set(nodes) <= set(renew_times()), f"a Lease for each of {nodes}", 60)
    first = renew_times()
    # kwok renews every quarter of the lease duration (10 s): each lease moves within 60 s.
    wait_until(lambda: all(renew_times()[n] != first[n] for n in nodes), "every node Lease renewed", 60)
    for node in core.list_node().items:
        ready = [c for c in (node.status.conditions or []) if c.type == "Ready"] if node.status else []
        assert ready and ready[0].status == "True", node.metadata.name if node.metadata else node
        taints = [t.key for t in (node.spec.taints or [])] if node.spec else []
        assert not [t for t in taints if t.startswith("node.kubernetes.io/")], taints
