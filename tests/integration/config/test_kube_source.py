"""KubeConfigMapSource against a real kube-apiserver: create, update, invalid documents, delete."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.config.loaders import KubeConfigMapSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def config(pipeline: str, **kw: Any) -> PipelineConfig:
    doc = {
        "tenant": "acme",
        "pipeline": pipeline,
        "kafka": {
            "bootstrapServers": "127.0.0.1:9092",
            "topics": {"events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"},
        },
        "redis": {"url": "redis://127.0.0.1:6379/0", "keyPrefix": "ap:"},
    }
    return PipelineConfig.model_validate(doc | kw).with_revision()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``cond`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - t0


def core_api(kubeconfig: Path) -> Any:
    k8s: Any = importlib.import_module("kubernetes.config")
    client: Any = importlib.import_module("kubernetes.client")
    return client.CoreV1Api(k8s.new_client_from_config(config_file=str(kubeconfig))), client


def test_configmap_revisions_are_watched(kubeconfig: Path, namespace: str) -> None:
    api, client = core_api(kubeconfig)
    name = "p1-config"
    seen: list[str] = []
    lock = threading.Lock()

    def on_change(cfg: PipelineConfig) -> None:
        with lock:
            seen.append(cfg.revision)

    src = KubeConfigMapSource(namespace, name, kubeconfig=kubeconfig, on_change=on_change, watch_timeout=5)

    def rev() -> str | None:
        cfg = src.current()
        return cfg.revision if cfg else None

    src.start()
    try:
        assert src.wait_loaded(30)
        assert src.current() is None  # the ConfigMap does not exist yet

        def put(data: dict[str, str], create: bool = False) -> None:
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data)
            if create:
                api.create_namespaced_config_map(namespace, body)
            else:
                api.replace_namespaced_config_map(name, namespace, body)

        a = config("p1")
        put({"config.json": a.to_json().decode()}, create=True)
        wait_for(lambda: rev() == a.revision, 10, "first revision")

        b = config("p1", allowedLateness="9s")
        put({"config.json": b.to_json().decode()})
        took = wait_for(lambda: rev() == b.revision, 1.0, "updated revision")
        print(f"update seen after {took * 1000:.0f} ms")

        # invalid documents: not JSON, schema-invalid, key missing; each keeps the last good revision
        put({"config.json": "{not json"})
        put({"config.json": '{"tenant": "acme"}'})
        put({"other.json": "{}"})
        assert rev() == b.revision
        c = config("p1", idleTimeout="45s")
        put({"config.json": c.to_json().decode()})
        wait_for(lambda: rev() == c.revision, 10, "revision after invalid ones")
        with lock:
            assert seen == [a.revision, b.revision, c.revision]  # the invalid ones never took effect

        # a deleted ConfigMap keeps the last revision in force; a recreated one is picked up
        api.delete_namespaced_config_map(name, namespace)
        d = config("p1", dedupTtl="2h")
        put({"config.json": d.to_json().decode()}, create=True)
        wait_for(lambda: rev() == d.revision, 10, "recreated")
        with lock:
            assert seen == [a.revision, b.revision, c.revision, d.revision]
    finally:
        src.stop()



def test_least_privilege_service_account_can_watch_its_configmap(kubeconfig: Path, namespace: str,
                                                                 tmp_path: Path) -> None:
    """The operator grants workers get/list/watch on their one ConfigMap by resourceNames: the
    source's single-name field selector is what makes list and watch pass that authorization."""
    import yaml

    api, client = core_api(kubeconfig)
    rbac = client.RbacAuthorizationV1Api(api.api_client)
    name = "p1-config"
    api.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="worker")))
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="worker"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], resource_names=[name],
                                   verbs=["get", "list", "watch"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="worker"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="worker"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="worker", namespace=namespace)]))
    token = api.create_namespaced_service_account_token(
        "worker", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))).status.token
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["users"][0]["user"] = {"token": token}
    worker_kubeconfig = tmp_path / "worker-kubeconfig"
    worker_kubeconfig.write_text(yaml.safe_dump(doc))

    a = config("p1")
    api.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name), data={"config.json": a.to_json().decode()}))
    src = KubeConfigMapSource(namespace, name, kubeconfig=worker_kubeconfig, watch_timeout=5)
    src.start()
    try:
        wait_for(lambda: (c := src.current()) is not None and c.revision == a.revision, 20, "listed")
        b = config("p1", allowedLateness="7s")
        api.replace_namespaced_config_map(name, namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name), data={"config.json": b.to_json().decode()}))
        wait_for(lambda: (c := src.current()) is not None and c.revision == b.revision, 10, "watched")
        assert src.errors == 0
    finally:
        src.stop()
