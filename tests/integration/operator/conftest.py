# mypy: disable-error-code="union-attr"
"""Fixtures for the operator against the devstack: CRDs applied, the operator as a subprocess, clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from alertpipe.operator.crdgen import build_crds
from devstack.pipeline import wait_for
from devstack.processes import free_port

from .helpers import Cluster

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    yield c
    c.close()


@pytest.fixture(scope="session")
def crds(api: client.ApiClient) -> list[str]:
    """Apply crds/ (create or replace) and wait until Established: the apiserver must accept them."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        name = doc["metadata"]["name"]
        try:
            live = ext.read_custom_resource_definition(name)
            doc["metadata"]["resourceVersion"] = live.metadata.resource_version
            ext.replace_custom_resource_definition(name, doc)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(doc)
        names.append(name)

    def established() -> bool:
        for n in names:
            conds = ext.read_custom_resource_definition(n).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(established, "CRDs Established", 60)
    assert set(names) >= {doc["metadata"]["name"] for doc in build_crds().values()}
    return names


class OperatorProcess:
    """``alertpipe operator`` scoped to one namespace, as a subprocess (restartable)."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, extra: list[str]) -> None:
        self.args = [
            sys.executable,
            "-m",
            "alertpipe",
            "--log-level=INFO",  # a separate value would be taken for the subcommand name
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "--health-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--image",
            "alertpipe:test",
            "--rule-debounce",
            "0.1",
            *extra,
        ]
        self.health_port = int(self.args[self.args.index("--health-port") + 1])
        self.metrics_port = int(self.args[self.args.index("--metrics-port") + 1])
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with socket.create_connection(("127.0.0.1", self.health_port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(healthy, "operator health endpoint", 60, every=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def http_get(self, port: int, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:  # noqa: S310
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def operator_factory(
    kubeconfig: Path, namespace: str, crds: list[str], tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def make(*extra: str, start: bool = True) -> OperatorProcess:
        op = OperatorProcess(kubeconfig, namespace, tmp_path / f"operator-{len(started)}.log", list(extra))
        started.append(op)
        if start:
            op.start()
        return op

    yield make
    for op in started:
        op.stop()


@pytest.fixture
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    return operator_factory()


@pytest.fixture
def k(api: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(api, namespace)
