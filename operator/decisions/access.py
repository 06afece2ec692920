"""The workers' identity: one ServiceAccount per pipeline, bound to a Role that reads the pipeline's
ConfigMaps and nothing else (Secrets arrive as volumes or env from the kubelet, never through the API)."""

from __future__ import annotations

from typing import Any

from alertpipe.operator.decisions.compile import config_map_name
from alertpipe.operator.decisions.owned import Owner, object_meta, with_hash, worker_account_name

__all__ = ["desired_role", "desired_role_binding", "desired_service_account"]

JSON = dict[str, Any]


def desired_service_account(owner: Owner) -> JSON:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": object_meta(owner, worker_account_name(owner.name), "worker"),
            "automountServiceAccountToken": True,
        }
    )


def desired_role(owner: Owner) -> JSON:
    """Workers may read their one ConfigMap and nothing else (Secrets arrive as volumes)."""
    return with_hash(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": object_meta(owner, worker_account_name(owner.name), "worker"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    # the stable config and a canary rollout's candidate config (rollouts)
                    "resourceNames": [config_map_name(owner.name), f"{owner.name}-config-canary"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        }
    )


def desired_role_binding(owner: Owner) -> JSON:
    name = worker_account_name(owner.name)
    return with_hash(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": object_meta(owner, name, "worker"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        }
    )
