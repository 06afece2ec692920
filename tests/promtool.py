"""The provisioned promtool (devstack/provision.py builds it from the Prometheus Go module)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devstack.cached import promtool


def find_promtool() -> Path:
    """The binary; missing fails in CI and skips elsewhere (run `alertpipe devstack provision promtool`)."""
    path = promtool()
    if not os.access(path, os.X_OK):
        msg = f"{path} not found: run `alertpipe devstack provision promtool`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def check_metrics(text: str) -> tuple[int, str]:
    """`promtool check metrics` of one /metrics text: (exit code, its complaints)."""
    out = subprocess.run([find_promtool(), "check", "metrics"], input=text.encode(), capture_output=True,
                         timeout=60, check=False)
    return out.returncode, (out.stdout + out.stderr).decode().strip()
