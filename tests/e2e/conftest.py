# mypy: disable-error-code="union-attr, no-untyped-call, arg-type"
"""Fixtures for end-to-end runs: CRDs applied, the operator as a subprocess, a receiver in a thread.

Everything real: the devstack's apiserver, controllers and kwok nodes; the local pod runner turns
the operator's worker Deployments into local ``alertpipe <role>`` processes; Kafka and Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from alertpipe.operator.crdgen import build_crds
from devstack.processes import free_port, port_open
from tests.receivers import HttpReceiver, start_http_receiver

ROOT = Path(__file__).resolve().parents[2]


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 90.0, every: float = 0.1) -> Any:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=str(kubeconfig))
    yield c
    c.close()


@pytest.fixture(scope="session")
def crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for name, doc in build_crds().items():
        del name
        try:
            live = ext.read_custom_resource_definition(doc["metadata"]["name"])
            doc["metadata"]["resourceVersion"] = live.metadata.resource_version
            ext.replace_custom_resource_definition(doc["metadata"]["name"], doc)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(doc)

    def established() -> bool:
        for doc in build_crds().values():
            conds = ext.read_custom_resource_definition(doc["metadata"]["name"]).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(established, "CRDs Established", 60)


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, crds: None, tmp_path: Path) -> Iterator[Path]:
    """``alertpipe operator`` scoped to the test's namespace; yields its log file."""
    log = tmp_path / "operator.log"
    health = free_port()
    args = [
        sys.executable, "-m", "alertpipe", "--log-level=INFO", "operator",
        "--kubeconfig", str(kubeconfig), "--namespace", namespace,
        "--health-port", str(health), "--metrics-port", str(free_port()),
        "--image", "alertpipe:e2e", "--rule-debounce", "0.2",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is None and port_open(health), "operator health endpoint", 60)
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ThreadedReceiver:
    """tests.receivers' HTTP receiver on its own event loop in a thread, for synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="receiver", daemon=True)
        self.thread.start()
        self.receiver: HttpReceiver = self.call(start_http_receiver())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.call(self.receiver.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    r = ThreadedReceiver()
    yield r
    r.stop()


def manifests(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
