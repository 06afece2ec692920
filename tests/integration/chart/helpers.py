"""Driving charts/alertpipe on the devstack: a Release (helm through the binary), values that keep the
operator pod off the pod-runner node and the webhook away from fake pod IPs, and authorizer checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from devstack.kube import LOCAL_NODE_LABEL, kube_client
from tests.integration.tooling.helm import CHART, HelmError, run_helm

TIMEOUT = "300s"  # helm --wait on a loaded 2-core machine (a 180 s upgrade once ran out)


class Release:
    """One release of the chart in the test's namespace, driven through the helm binary."""

    def __init__(self, helm_bin: Path, kubeconfig: Path, namespace: str) -> None:
        self.helm_bin, self.kubeconfig, self.namespace = helm_bin, kubeconfig, namespace
        self.name = namespace  # unique per test: cluster-scoped names (ClusterRoles, VWC) never clash
        self.fullname = f"{self.name}-alertpipe"
        self.installed = False

    def helm(self, *args: str, values: dict[str, Any] | None = None) -> str:
        try:
            return run_helm(
                self.helm_bin,
                ["--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace, *args],
                values=values,
                timeout=420,
            )
        except HelmError as e:  # say why helm --wait ran out: what the cluster shows
            raise HelmError(
                f"{e}\n--- cluster state ---\n{cluster_state(self.kubeconfig, self.namespace)}"
            ) from None

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


def cluster_state(kubeconfig: Path, namespace: str) -> str:
    """Nodes (Ready, taints), the namespace's Deployments, pods (phase, node, conditions) and Events."""
    api = kube_client(kubeconfig)
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    lines: list[str] = []
    try:
        for n in core.list_node().items:
            ready = [c.status for c in n.status.conditions or [] if c.type == "Ready"]
            lines.append(
                f"node {n.metadata.name} Ready={ready} taints={[t.key for t in n.spec.taints or []]}"
            )
        for d in apps.list_namespaced_deployment(namespace).items:
            lines.append(f"deployment {d.metadata.name} replicas={d.status.replicas} "
                         f"available={d.status.available_replicas}")  # fmt: skip
        for p in core.list_namespaced_pod(namespace).items:
            conds = [(c.type, c.status, c.reason) for c in p.status.conditions or []]
            lines.append(f"pod {p.metadata.name} {p.status.phase} node={p.spec.node_name} {conds}")
        for ev in core.list_namespaced_event(namespace).items:
            lines.append(
                f"event {ev.involved_object.kind}/{ev.involved_object.name} {ev.reason}: {ev.message}"
            )
    except client.ApiException as e:
        lines.append(f"(could not read the cluster: {e.status} {e.reason})")
    finally:
        api.close()
    return "\n".join(lines)
