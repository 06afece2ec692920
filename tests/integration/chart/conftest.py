from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from devstack.kube import kube_client
from tests.integration.chart.helpers import Release


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = kube_client(kubeconfig)
    yield c
    c.close()


@pytest.fixture
def release(helm_bin: Path, kubeconfig: Path, namespace: str) -> Iterator[Release]:
    rel = Release(helm_bin, kubeconfig, namespace)
    try:
        yield rel
    finally:
        rel.uninstall()  # also after a failed assertion: no cluster-scoped leftovers for other tests
