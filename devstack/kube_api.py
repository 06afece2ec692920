"""The client side of the devstack's Kubernetes: its kubeconfig, the fake nodes' objects, an
ApiClient, and waiting for Ready nodes (devstack.kube runs the control plane itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devstack.processes import wait_until

__all__ = [
    "FAKE_NODE_ANNOTATION", "LOCAL_NODE", "LOCAL_NODE_LABEL", "fake_node", "kube_client", "kubeconfig_yaml",
    "wait_nodes_ready",
]

FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
LOCAL_NODE = "devstack-local"
LOCAL_NODE_LABEL = ("alertpipe.io/pod-runner", "local")

def kubeconfig_yaml(server: str, ca_file: Path, token: str, name: str = "devstack") -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin", "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def fake_node(
    name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A Node object kwok will manage (by its annotation) and report Ready."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1],
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "type": "kwok",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints or []},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
        },
    }


def wait_nodes_ready(kubeconfig: Path, count: int, timeout: float = 60) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]

    def ready() -> bool:
        n = 0
        for node in api.list_node().items:
            conds = (node.status.conditions if node.status else None) or []
            n += any(c.type == "Ready" and c.status == "True" for c in conds)
        return n >= count

    wait_until(ready, f"{count} Ready nodes", timeout)


def kube_client(kubeconfig: Path) -> Any:
    """A kubernetes ``ApiClient`` for the devstack's kubeconfig (close it when done)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
