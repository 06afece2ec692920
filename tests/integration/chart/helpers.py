"""Driving charts/alertpipe on the devstack: a Release (helm through the binary), values that keep the
operator pod off the pod-runner node and the webhook away from fake pod IPs, and authorizer checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from devstack.kube import LOCAL_NODE_LABEL
from tests.unit.chart.helm import CHART, run_helm

TIMEOUT = "300s"  # helm --wait on a loaded 2-core machine (a 180 s upgrade once ran out)


class Release:
    """One release of the chart in the test's namespace, driven through the helm binary."""

    def __init__(self, helm_bin: Path, kubeconfig: Path, namespace: str) -> None:
        self.helm_bin, self.kubeconfig, self.namespace = helm_bin, kubeconfig, namespace
        self.name = namespace  # unique per test: cluster-scoped names (ClusterRoles, VWC) never clash
        self.fullname = f"{self.name}-alertpipe"
        self.installed = False

    def helm(self, *args: str, values: dict[str, Any] | None = None) -> str:
        return run_helm(
            self.helm_bin,
            ["--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace, *args],
            values=values,
            timeout=420,
        )

    def install(self, values: dict[str, Any]) -> str:
        # --take-ownership: other tests may have applied the same CRDs from crds/ already.
        out = self.helm("install", self.name, str(CHART), "--wait", "--timeout", TIMEOUT, "--take-ownership",
                        values=values)  # fmt: skip
        self.installed = True
        return out

    def upgrade(self, values: dict[str, Any]) -> str:
        return self.helm("upgrade", self.name, str(CHART), "--wait", "--timeout", TIMEOUT, values=values)

    def uninstall(self) -> None:
        if self.installed:
            self.helm("uninstall", self.name, "--wait", "--timeout", TIMEOUT)
            self.installed = False


def base_values(namespace: str) -> dict[str, Any]:
    return {
        # Keep off the devstack's local pod-runner node: that one would really run `alertpipe operator`.
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": LOCAL_NODE_LABEL[0], "operator": "DoesNotExist"}]}]}}},
        "webhook": {"namespaceSelector": {"matchLabels": {"alertpipe.io/chart-test": f"never-{namespace}"}}},
    }  # fmt: skip


def established(ext: Any, name: str) -> bool:
    conds = ext.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conds)


def can(api: client.ApiClient, user: str, verb: str, resource: str, *, group: str = "",
        namespace: str | None = None, sub: str | None = None) -> bool:  # fmt: skip
    """Ask the apiserver's authorizer (SubjectAccessReview) whether `user` may do it."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, group=group, namespace=namespace, subresource=sub
            ),
        )
    )
    got: Any = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(got.status.allowed)
