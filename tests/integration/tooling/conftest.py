from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.tooling.helm import find_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary (provisioned by `alertpipe devstack provision`); missing fails in CI."""
    found = find_helm()
    if found is None or not found.is_file():
        msg = "helm not found: run `alertpipe devstack provision` (or set ALERTPIPE_HELM)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found
