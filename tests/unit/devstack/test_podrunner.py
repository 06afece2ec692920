"""The pod runner's pure parts: which pods run, env resolution, $(VAR) expansion, path mapping."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.podspec import (
    container_argv,
    container_env,
    expand_vars,
    local_ip,
    pods_to_run,
    rewrite_paths,
)

pytestmark = pytest.mark.unit


def pod(uid: str, **extra: Any) -> dict[str, Any]:
    meta = {"uid": uid, "name": f"p-{uid}", "namespace": "ns", "labels": {"app": "x"}}
    meta.update(extra.pop("meta", {}))
    return {"metadata": meta, "spec": {"nodeName": "devstack-local"}, "status": extra.pop("status", {})}


def test_pods_to_run_skips_terminating_finished_and_unselected() -> None:
    pods = [
        pod("a"),
        pod("b", meta={"deletionTimestamp": "2026-01-01T00:00:00Z"}),
        pod("c", status={"phase": "Succeeded"}),
        pod("d", meta={"labels": {"app": "y"}}),
    ]
    assert set(pods_to_run(pods)) == {"a", "d"}
    assert set(pods_to_run(pods, {"app": "x"})) == {"a"}


def test_expand_vars_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand_vars("$(A)-$(B)", env) == "1-two"
    assert expand_vars("$(MISSING)", env) == "$(MISSING)"
    assert expand_vars("$$(A)", env) == "$(A)"


def test_rewrite_paths_maps_mounts_longest_first(tmp_path: Path) -> None:
    mounts = {"/etc/app": tmp_path / "v1", "/etc/app/secret": tmp_path / "v2"}
    assert rewrite_paths("/etc/app/config.json", mounts) == f"{tmp_path}/v1/config.json"
    assert rewrite_paths("/etc/app/secret/token", mounts) == f"{tmp_path}/v2/token"
    assert rewrite_paths("--config=/etc/app/c.json", mounts) == f"--config={tmp_path}/v1/c.json"
    assert rewrite_paths("/etc/application", mounts) == "/etc/application"


def test_container_argv_resolves_our_commands(tmp_path: Path) -> None:
    exe_dir = Path(sys.executable).parent
    assert container_argv({"args": ["evaluator", "--x"]}, {}, {}) == [
        str(exe_dir / "alertpipe"),
        "evaluator",
        "--x",
    ]
    argv = container_argv(
        {"command": ["python", "-m", "m"], "args": ["$(P)", "/cfg/f"]}, {"P": "9"}, {"/cfg": tmp_path}
    )
    assert argv == [sys.executable, "-m", "m", "9", f"{tmp_path}/f"]
    assert container_argv({"image": "x"}, {}, {}) is None


def test_container_env_resolves_refs_in_order() -> None:
    data = {("ConfigMap", "ns", "cm"): {"k": "v", "other": "o"}, ("Secret", "ns", "s"): {"t": "tok"}}

    def lookup(kind: str, ns: str, name: str) -> dict[str, str] | None:
        return data.get((kind, ns, name))

    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(CM_k)"},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "O", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x", "optional": True}}},
        ],
    }
    env = container_env(pod("a"), container, lookup, {})
    assert env == {"CM_k": "v", "CM_other": "o", "A": "1", "B": "1-v", "S": "tok", "N": "ns", "L": "x"}
    with pytest.raises(LookupError, match="ns/gone"):
        container_env(
            pod("a"),
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
            lookup,
            {},
        )


def test_each_pod_gets_a_stable_loopback_address_of_its_own() -> None:
    ips = {local_ip(f"uid-{i}") for i in range(200)}
    assert len(ips) >= 199  # collisions are rare (2^22 addresses)
    assert local_ip("uid-1") == local_ip("uid-1")
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        assert addr.is_loopback and addr in ipaddress.ip_network("127.64.0.0/10"), ip


def test_a_folder_holding_mounts_maps_to_a_tree_of_them(tmp_path: Path) -> None:
    from devstack.podspec import mount_parents as _mount_parents

    hook, pd = tmp_path / "vol-hook", tmp_path / "vol-pd"
    for d, key in ((hook, "secret"), (pd, "routing-key")):
        d.mkdir()
        (d / key).write_text(d.name)
    mounts = {"/var/run/secrets/alertpipe/hook": hook, "/var/run/secrets/alertpipe/pd": pd}
    mounts.update(_mount_parents(mounts, tmp_path / "root"))
    local = Path(rewrite_paths("/var/run/secrets/alertpipe", mounts))
    assert (local / "hook" / "secret").read_text() == "vol-hook"
    assert (local / "pd" / "routing-key").read_text() == "vol-pd"
    assert rewrite_paths("/var/run/secrets/alertpipe/pd/routing-key", mounts) == str(pd / "routing-key")
