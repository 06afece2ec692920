"""`alertpipe devstack up/down` and the no-orphans promise, on a Redis-only stack (fast)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devstack.paths import bin_dir
from devstack.processes import wait_until
from devstack.stack import StackEnv

pytestmark = pytest.mark.integration
ALERTPIPE = [sys.executable, "-m", "alertpipe.cli"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ALERTPIPE, "devstack", *args], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def run_root(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "ALERTPIPE_RUN_ROOT": str(tmp_path), "COLUMNS": "200"}
    yield env
    cli(env, "down")


def redis_pid(url: str) -> int:
    return int(redis.Redis.from_url(url).info("server")["process_id"])


def test_up_prints_endpoints_env_and_down_leaves_nothing(run_root: dict[str, str], tmp_path: Path) -> None:
    up = cli(run_root, "up", "--components", "redis")
    assert up.returncode == 0, up.stderr
    env_file = tmp_path / "up" / "devstack.env"
    env = StackEnv.load(env_file)
    url = env.get("redis")
    assert url in up.stdout and str(env_file) in up.stdout.replace("\n", "")
    server_pid = redis_pid(url)
    supervisor = int(env.values["ALERTPIPE_DEVSTACK_PID"])

    exports = cli(run_root, "env")
    assert f"export ALERTPIPE_REDIS_URL={url}" in exports.stdout
    assert f"export ALERTPIPE_DEVSTACK_ENV={env_file}" in exports.stdout
    assert f'export PATH={bin_dir()}:"$PATH"' in exports.stdout  # the stack's kubectl and helm first
    status = cli(run_root, "status")
    assert status.returncode == 0 and "healthy" in status.stdout

    again = cli(run_root, "up", "--components", "redis")  # idempotent: finds the running stack
    assert "already running" in again.stdout and url in again.stdout

    assert cli(run_root, "down").returncode == 0
    wait_until(lambda: not alive(server_pid) and not alive(supervisor), "stack processes gone", 30)
    assert cli(run_root, "status").returncode == 1


def test_killing_the_supervisor_hard_takes_its_children_along(
    run_root: dict[str, str], tmp_path: Path
) -> None:
    assert cli(run_root, "up", "--components", "redis").returncode == 0
    env = StackEnv.load(tmp_path / "up" / "devstack.env")
    server_pid = redis_pid(env.get("redis"))
    os.kill(int(env.values["ALERTPIPE_DEVSTACK_PID"]), signal.SIGKILL)  # no chance to clean up
    wait_until(lambda: not alive(server_pid), "redis-server gone after its parent died", 30)
