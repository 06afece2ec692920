"""Helm installs a chart into the devstack's apiserver and uninstalls it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from devstack.kube import kube_client
from devstack.processes import wait_until

pytestmark = pytest.mark.integration
CHART = Path(__file__).with_name("chart")


def test_helm_install_and_uninstall(helm_bin: Path, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }

    def helm(*args: str) -> str:
        out = subprocess.run(
            [str(helm_bin), "--kubeconfig", str(kubeconfig), "--namespace", namespace, *args],
            capture_output=True, text=True, env=env, timeout=180, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    helm("install", "smoke", str(CHART), "--set", "greeting=hi-from-helm", "--wait", "--timeout", "120s")
    api = kube_client(kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    cm = core.read_namespaced_config_map("smoke-settings", namespace)
    assert cm.data is not None and cm.data["greeting"] == "hi-from-helm"
    assert cm.data["kubeVersion"].startswith("v1.")  # the apiserver's stamped version
    dep = apps.read_namespaced_deployment_status("smoke-app", namespace)
    assert dep.status is not None and dep.status.available_replicas == 1  # --wait waited for it
    releases = json.loads(helm("list", "--output", "json"))
    assert [(r["name"], r["status"]) for r in releases] == [("smoke", "deployed")]

    helm("uninstall", "smoke", "--wait", "--timeout", "120s")

    def removed() -> bool:
        names = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items if c.metadata}
        return "smoke-settings" not in names and not apps.list_namespaced_deployment(namespace).items

    wait_until(removed, "chart resources removed", 60)
    assert json.loads(helm("list", "--output", "json")) == []
    api.close()
