"""Fixtures for end-to-end runs: CRDs applied, the operator as a subprocess, a receiver in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from devstack.pipeline import ThreadedReceiver, apply_crds, run_operator


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    yield c
    c.close()


@pytest.fixture(scope="session")
def crds(api: client.ApiClient) -> None:
    apply_crds(api)


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, crds: None, tmp_path: Path) -> Iterator[Path]:
    """``alertpipe operator`` scoped to the test's namespace; yields its log file."""
    log = tmp_path / "operator.log"
    with run_operator(kubeconfig, namespace, log, ("--slo-interval", "1")):
        yield log


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    r = ThreadedReceiver()
    yield r
    r.stop()
