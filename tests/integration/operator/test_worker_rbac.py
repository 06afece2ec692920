# mypy: disable-error-code="union-attr, no-any-return"
"""What a worker's ServiceAccount may do, asked of the real apiserver (SubjectAccessReview) after the
operator made its Role: read its own pipeline's ConfigMaps, and nothing else (no Secret through the
API: the kubelet mounts the ones its role needs). Then the same account, with a real token, runs the
ConfigMap watch a worker runs. And a pipeline naming another namespace's topic is refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from alertpipe.workers.config.loaders import KubeConfigMapSource
from devstack.pipeline import wait_for

from .conftest import OperatorProcess
from .helpers import Cluster, pipeline_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _allowed(k: Cluster, sa: str, verb: str, resource: str, name: str = "", namespace: str | None = None,
             group: str = "") -> bool:
    ns = namespace or k.ns
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{k.ns}:{sa}",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{k.ns}", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            namespace=ns, verb=verb, resource=resource, name=name or None, group=group),
    ))
    out = client.AuthorizationV1Api(k.core.api_client).create_subject_access_review(review)
    return bool(out.status.allowed)


def _token_kubeconfig(k: Cluster, sa: str, admin_kubeconfig: Path, path: Path) -> Path:
    """A kubeconfig that authenticates as ``sa`` with a short-lived token (TokenRequest)."""
    req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=600,
                                                                              audiences=[]))
    token = k.core.create_namespaced_service_account_token(sa, k.ns, req).status.token
    cfg: dict[str, Any] = yaml.safe_load(admin_kubeconfig.read_text())
    for user in cfg["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_worker_reads_its_own_configmaps_and_nothing_else(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str, kubeconfig: Path, tmp_path: Path
) -> None:
    secret = {"name": "kafka-creds", "key": "creds"}
    keys = {"apiKeysSecretRef": {"name": "keys", "key": "k"}}
    k.create(pipeline_body("main", kafka_bootstrap, ingest=keys))
    k.create(pipeline_body("other", kafka_bootstrap))
    rbac = client.RbacAuthorizationV1Api(k.core.api_client)

    def made() -> bool:
        names = {r.metadata.name for r in rbac.list_namespaced_role_binding(k.ns).items}
        return {"main-worker", "other-worker"} <= names and k.config("main") is not None \
            and k.config("other") is not None

    wait_for(made, "the workers' Roles, RoleBindings and ConfigMaps", 90)

    sa = "main-worker"
    for verb in ("get", "list", "watch"):
        assert _allowed(k, sa, verb, "configmaps", "main-config")
        assert _allowed(k, sa, verb, "configmaps", "main-config-canary")  # a canary rollout's config
        assert not _allowed(k, sa, verb, "configmaps", "other-config")  # the other pipeline's
        assert not _allowed(k, sa, verb, "configmaps", "main-config", namespace="elsewhere")
        assert not _allowed(k, sa, verb, "secrets", "keys")  # mounted by the kubelet, never read
        assert not _allowed(k, sa, verb, "secrets", secret["name"])
    assert not _allowed(k, sa, "list", "configmaps")  # every ConfigMap of the namespace
    assert not _allowed(k, sa, "list", "secrets")
    for verb in ("create", "update", "patch", "delete"):
        assert not _allowed(k, sa, verb, "configmaps", "main-config")
    assert not _allowed(k, sa, "get", "alertpipelines", "main", group="alertpipe.io")
    assert not _allowed(k, sa, "list", "pods")
    assert not _allowed(k, sa, "create", "pods")

    # the account, authenticated for real, runs the worker's ConfigMap watch (list by field
    # selector, then watch) and is refused the other pipeline's config
    own = _token_kubeconfig(k, sa, kubeconfig, tmp_path / "worker.kubeconfig")
    src = KubeConfigMapSource(k.ns, "main-config", kubeconfig=own, watch_timeout=5)
    src.start()
    try:
        deadline = time.monotonic() + 30
        while src.current() is None:
            assert time.monotonic() < deadline, "the worker's account could not load its config"
            time.sleep(0.05)
        assert src.current().pipeline == "main"
    finally:
        src.stop()
    from kubernetes import config as kconfig

    as_worker = client.CoreV1Api(kconfig.new_client_from_config(config_file=str(own)))  # type: ignore[no-untyped-call]
    for call in (lambda: as_worker.read_namespaced_config_map("other-config", k.ns),
                 lambda: as_worker.list_namespaced_secret(k.ns)):
        with pytest.raises(client.ApiException) as exc:
            call()
        assert exc.value.status == 403


def test_a_pipeline_cannot_name_another_namespaces_topic(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str
) -> None:
    body = pipeline_body("thief", kafka_bootstrap)
    body["spec"]["kafka"]["topics"]["alerts"] = {"name": "victim.main.alerts"}
    k.create(body)
    cond = wait_for(
        lambda: (c := k.condition("alertpipelines", "thief", "Ready")) and c["status"] == "False"
        and "spec.kafka.topics.alerts.name" in c["message"] and c,
        "Ready=False naming the topic field", 60,
    )
    assert f"must start with '{k.ns}.'" in cond["message"]
    assert k.config("thief") is None  # nothing was written for it, no topic adopted
