"""Where the devstack keeps things: the provisioning cache (outside the repo) and run directories."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHECKOUT", "bin_dir", "cache_dir", "kafka_home", "runs_dir"]

CHECKOUT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """$ALERTPIPE_CACHE, default ~/.cache/alertpipe: provisioned binaries and jars, shared by checkouts."""
    return Path(os.environ.get("ALERTPIPE_CACHE") or Path.home() / ".cache" / "alertpipe").expanduser()


def bin_dir() -> Path:
    return cache_dir() / "bin"


def kafka_home(version: str) -> Path:
    return cache_dir() / f"kafka-{version}"


def runs_dir() -> Path:
    """$ALERTPIPE_RUN_ROOT, default <checkout>/.devstack/runs: one sub-folder per stack (logs, data)."""
    return Path(os.environ.get("ALERTPIPE_RUN_ROOT") or CHECKOUT / ".devstack" / "runs").expanduser()
