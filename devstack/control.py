"""Start, find and stop the background stack of ``alertpipe devstack up`` (one per run root)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devstack.paths import CHECKOUT, runs_dir
from devstack.processes import StartError
from devstack.stack import pid_alive
from devstack.supervisor import ENV_FILE, read_state

__all__ = ["UP_NAME", "down", "env_file", "running_state", "up", "up_dir"]

UP_NAME = "up"


def up_dir() -> Path:
    return runs_dir() / UP_NAME


def env_file() -> Path:
    return up_dir() / ENV_FILE


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own child (the demo starts the supervisor): a zombie is not alive
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    return pid_alive(pid)


def running_state() -> dict[str, Any]:
    """The state of a live background stack, or {} when none runs."""
    state = read_state(up_dir())
    pid = state.get("pid")
    if isinstance(pid, int) and _alive(pid) and state.get("status") in ("starting", "ready"):
        return state
    return {}


def up(
    components: tuple[str, ...] = ("redis", "kafka", "kube", "postgres"),
    timeout: float = 300.0,
    pod_runner: bool = True,
    brokers: int = 1,
) -> dict[str, Any]:
    """Start the stack in a detached supervisor (or find the running one); return its ready state."""
    state = running_state()
    if not state:
        d = up_dir()
        if d.exists():
            import shutil

            shutil.rmtree(d)
        d.mkdir(parents=True)
        # sys.path.append, not PYTHONPATH: the checkout's operator/ folder must not shadow the stdlib
        code = "import sys; sys.path.append(sys.argv[1]); from devstack.supervisor import main; "
        code += "sys.exit(main(sys.argv[2:]))"
        with open(d / "supervisor.log", "ab") as log:
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    code,
                    str(CHECKOUT),
                    "--run-dir",
                    str(d),
                    "--components",
                    ",".join(components),
                    *([] if pod_runner else ["--no-pod-runner"]),
                    "--brokers",
                    str(brokers),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: survives this command and the terminal
                close_fds=True,
            )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(up_dir())
        status = state.get("status")
        if status == "ready":
            return state
        if status == "failed":
            raise StartError(str(state.get("error", "failed; see the logs in " + str(up_dir()))))
        pid = state.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            raise StartError(f"the devstack supervisor exited; see {up_dir() / 'supervisor.log'}")
        time.sleep(0.2)
    raise StartError(f"the devstack was not ready after {timeout:.0f}s; see the logs in {up_dir()}")


def down(timeout: float = 60.0) -> bool:
    """Stop the background stack; False when none was running."""
    state = read_state(up_dir())
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)  # its children die with it (parent-death signal)
    return True
