"""`helm install` of charts/alertpipe into the devstack's real apiserver: CRDs established, the operator
Deployment Available on kwok nodes, RBAC that grants what the operator needs and nothing more (asked
of the apiserver's own authorizer), a webhook CA that survives `helm upgrade`, and `helm uninstall`.

Kwok pods run nothing, so the operator itself does not run here (tests/e2e runs it). The webhook is
registered but scoped to a namespace label nothing carries: the apiserver never dials the fake pod IPs
behind its Service.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from devstack.kube import LOCAL_NODE_LABEL
from devstack.processes import wait_until
from tests.integration.chart.helpers import Release, base_values, can, established
from tests.integration.tooling.helm import CRDS, load_crd_dir

# helm --wait, kwok scheduling and a reconcile on a loaded 2-core machine: more than the default 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_install_cluster_wide_ha_then_upgrade_and_uninstall(
    release: Release, api: client.ApiClient, namespace: str
) -> None:
    values = {**base_values(namespace), "replicaCount": 2}
    notes = release.install(values)
    ns, full = namespace, release.fullname
    # Any: the client's models make every field Optional; a missing one fails the test anyway.
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    ext: Any = client.ApiextensionsV1Api(api)
    rbac: Any = client.RbacAuthorizationV1Api(api)

    # NOTES.txt tells what to do next.
    assert f"kubectl -n {ns} rollout status deployment/{full}" in notes
    assert "examples/rules/" in notes

    # CRDs: the generated ones (crds/), established, kept on uninstall; Kopf's peering CRDs from crds/.
    for name, crd in load_crd_dir(CRDS).items():
        assert established(ext, name), name
        live = ext.read_custom_resource_definition(name)
        assert live.metadata.annotations["helm.sh/resource-policy"] == "keep"
        assert [v.name for v in live.spec.versions] == [v["name"] for v in crd["spec"]["versions"]]
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert established(ext, name), name
    custom: Any = client.CustomObjectsApi(api)
    peering = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", full)
    assert peering["metadata"]["name"] == full

    # The operator Deployment is Available with both replicas, on kwok nodes (not the pod runner's).
    dep = apps.read_namespaced_deployment(full, ns)
    assert dep.status.available_replicas == 2
    pod_spec = dep.spec.template.spec
    assert pod_spec.containers[0].args[pod_spec.containers[0].args.index("--peering") + 1] == full
    pods = core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={release.name}").items
    assert len(pods) == 2
    for pod in pods:
        node = core.read_node(pod.spec.node_name)
        assert node.metadata.labels.get("type") == "kwok"
        assert LOCAL_NODE_LABEL[0] not in node.metadata.labels
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.containers[0].security_context.read_only_root_filesystem is True
    pdb: Any = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(full, ns)
    assert pdb.spec.min_available == 1

    # RBAC, asked of the apiserver: what the operator needs, in any namespace, and no more.
    sa = f"system:serviceaccount:{ns}:{full}"
    anywhere = "default"
    for verb, resource, group, sub in [
        ("watch", "alertpipelines", "alertpipe.io", None),
        ("patch", "alertrules", "alertpipe.io", None),
        ("patch", "alertpipelines", "alertpipe.io", "status"),
        ("create", "configmaps", "", None),
        ("update", "deployments", "apps", None),
        ("create", "roles", "rbac.authorization.k8s.io", None),
        ("create", "rolebindings", "rbac.authorization.k8s.io", None),
        ("create", "serviceaccounts", "", None),
        ("get", "secrets", "", None),
        ("create", "events", "", None),
    ]:
        assert can(api, sa, verb, resource, group=group, namespace=anywhere, sub=sub), (verb, resource, sub)
    for verb, resource, group in [
        ("list", "secrets", ""),
        ("delete", "secrets", ""),
        ("create", "pods", ""),
        ("delete", "namespaces", ""),
        ("create", "clusterroles", "rbac.authorization.k8s.io"),
        ("escalate", "roles", "rbac.authorization.k8s.io"),
        ("update", "customresourcedefinitions", "apiextensions.k8s.io"),
        ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io"),
    ]:
        assert not can(api, sa, verb, resource, group=group, namespace=anywhere), (verb, resource)
    assert can(api, sa, "patch", "clusterkopfpeerings", group="kopf.dev")
    assert can(api, sa, "watch", "customresourcedefinitions", group="apiextensions.k8s.io")

    # The webhook: registered with the chart's CA, pointing at the chart's Service.
    adm: Any = client.AdmissionregistrationV1Api(api)
    vwc = adm.read_validating_webhook_configuration(full)
    secret = core.read_namespaced_secret(f"{full}-webhook-tls", ns)
    ca = secret.data["ca.crt"]
    assert {h.client_config.service.path for h in vwc.webhooks} == {
        "/validate-alertrule",
        "/validate-alertpipeline",
    }
    for hook in vwc.webhooks:
        assert hook.client_config.ca_bundle == ca  # both base64, as the API carries them
        assert hook.client_config.service.name == f"{full}-webhook"
    core.read_namespaced_service(f"{full}-webhook", ns)
    core.read_namespaced_service(f"{full}-metrics", ns)

    # The installed CRDs validate for real: a pipeline breaking the CEL rule (redis needs exactly one
    # of url, urlSecretRef) is refused with the field path; a valid one is stored.
    body: dict[str, Any] = {
        "apiVersion": "alertpipe.io/v1alpha1",
        "kind": "AlertPipeline",
        "metadata": {"name": "p1"},
        "spec": {
            "kafka": {"bootstrapServers": "127.0.0.1:9", "topics": {"events": {"partitions": 3}}},
            "redis": {"url": "redis://127.0.0.1:9/0"},
        },
    }
    bad = {**body, "metadata": {"name": "p2"}, "spec": {**body["spec"], "redis": {}}}
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object("alertpipe.io", "v1alpha1", ns, "alertpipelines", bad)
    assert refused.value.status == 422 and "spec.redis" in str(refused.value.body)
    custom.create_namespaced_custom_object("alertpipe.io", "v1alpha1", ns, "alertpipelines", body)
    assert custom.get_namespaced_custom_object("alertpipe.io", "v1alpha1", ns, "alertpipelines", "p1")

    # helm upgrade keeps the webhook CA (the chart looks its Secret up instead of generating anew).
    release.upgrade({**values, "operator": {"logLevel": "DEBUG"}})
    assert core.read_namespaced_secret(f"{full}-webhook-tls", ns).data["ca.crt"] == ca
    dep = apps.read_namespaced_deployment(full, ns)
    assert dep.spec.template.spec.containers[0].args[:2] == ["--log-level=DEBUG", "operator"]
    wait_until(lambda: (apps.read_namespaced_deployment(full, ns).status.available_replicas or 0) == 2,
               "upgraded operator Available", 120)  # fmt: skip

    # helm uninstall removes the release's objects, cluster-scoped ones included; the CRDs stay.
    release.uninstall()

    def gone() -> bool:
        deps = [d.metadata.name for d in apps.list_namespaced_deployment(ns).items]
        crs = [r.metadata.name for r in rbac.list_cluster_role().items if r.metadata.name.startswith(full)]
        hooks = [h.metadata.name for h in adm.list_validating_webhook_configuration().items
                 if h.metadata.name == full]  # fmt: skip
        return not deps and not crs and not hooks

    wait_until(gone, "release objects removed", 120)
    for name in load_crd_dir(CRDS):
        assert established(ext, name), f"{name} must be kept (crds.keep)"
    releases = json.loads(release.helm("list", "--output", "json"))
    assert releases == []


def test_install_scoped_to_listed_namespaces(release: Release, api: client.ApiClient, namespace: str) -> None:
    values = {**base_values(namespace), "operator": {"watchNamespaces": [namespace]},
              "webhook": {"enabled": False}}  # fmt: skip
    release.install(values)
    full, sa = release.fullname, f"system:serviceaccount:{namespace}:{release.fullname}"
    apps: Any = client.AppsV1Api(api)
    assert apps.read_namespaced_deployment(full, namespace).status.available_replicas == 1
    args = apps.read_namespaced_deployment(full, namespace).spec.template.spec.containers[0].args
    assert args[args.index("--namespace") + 1] == namespace
    # Rights in the watched namespace only.
    assert can(api, sa, "create", "deployments", group="apps", namespace=namespace)
    assert can(api, sa, "patch", "kopfpeerings", group="kopf.dev", namespace=namespace)
    assert not can(api, sa, "create", "deployments", group="apps", namespace="default")
    assert not can(api, sa, "watch", "alertpipelines", group="alertpipe.io", namespace="default")
    assert not can(api, sa, "get", "secrets", namespace="default")
    # The peering object lives in the watched namespace.
    peering: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", full
    )
    assert peering["metadata"]["namespace"] == namespace
    # No webhook objects at all.
    adm: Any = client.AdmissionregistrationV1Api(api)
    names = [h.metadata.name for h in adm.list_validating_webhook_configuration().items]
    assert full not in names
