"""`alertpipe ingestor --config configmap:NS/NAME` as a process: config from a real apiserver, keys
from a Secret folder, a new ConfigMap revision applied live."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import AUTH, KEYS_TEXT, events, make_config, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback only
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ingestor_follows_its_configmap(
    kubeconfig: Path, namespace: str, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    k8s: Any = importlib.import_module("kubernetes.config")
    client: Any = importlib.import_module("kubernetes.client")
    api = client.CoreV1Api(k8s.new_client_from_config(config_file=str(kubeconfig)))
    secrets = tmp_path / "secrets"
    (secrets / "p1-ingest-keys").mkdir(parents=True)
    (secrets / "p1-ingest-keys" / "keys").write_text(KEYS_TEXT)
    base = make_config(kafka_bootstrap, topic)

    def doc(max_body: int) -> dict[str, str]:
        ingest = {"maxBodyBytes": max_body, "apiKeysSecretRef": {"name": "p1-ingest-keys", "key": "keys"}}
        cfg = base.model_validate(base.model_dump(by_alias=True) | {"ingest": ingest, "revision": ""})
        return {"config.json": cfg.with_revision().to_json().decode()}

    meta = client.V1ObjectMeta(name="p1-config")
    api.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=meta, data=doc(1_048_576)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "ingestor.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alertpipe", "ingestor", "--config", f"configmap:{namespace}/p1-config",
             "--secrets-dir", str(secrets), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
        )
        try:
            def wait(cond: Any, what: str) -> None:
                deadline = time.monotonic() + 60
                while True:
                    assert proc.poll() is None, log_path.read_text()
                    try:
                        if cond():
                            return
                    except (urllib.error.URLError, ConnectionError):
                        pass
                    assert time.monotonic() < deadline, f"{what}\n{log_path.read_text()}"
                    time.sleep(0.1)

            wait(lambda: http("GET", url + "/readyz") == 200, "ready")
            body = orjson.dumps(events(100))
            hdrs = {**AUTH, "Content-Type": "application/json"}
            answers: list[int] = []

            def post() -> int:
                answers.append(http("POST", url + "/v1/events", body, hdrs))
                return answers[-1]

            assert post() == 202
            api.replace_namespaced_config_map(
                "p1-config", namespace, client.V1ConfigMap(metadata=meta, data=doc(4096))
            )
            wait(lambda: post() == 413, "the new revision's body limit")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "loaded from configmap" in log_path.read_text()
    accepted = 100 * answers.count(202)  # until the new revision arrived, the same batch was accepted
    assert set(answers) == {202, 413}
    assert len(read_topic(kafka_bootstrap, topic, expect=accepted)) == accepted
