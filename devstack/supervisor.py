"""The background process behind ``alertpipe devstack up``: it owns the stack's children.

It starts the stack, records pid, endpoints and timings in ``state.json`` and the env file, then
waits for SIGTERM/SIGINT (``devstack down``) and stops everything in order. Every child carries a
parent-death signal tied to this process, so even ``kill -9`` of the supervisor leaves no orphans.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devstack.stack import ENV_KEYS, Stack

__all__ = ["ENV_FILE", "STATE_FILE", "main", "read_state", "write_env_file"]

logger = logging.getLogger(__name__)
STATE_FILE = "state.json"
ENV_FILE = "devstack.env"


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(run_dir: Path, **state: Any) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, run_dir / STATE_FILE)


def write_env_file(path: Path, env: dict[str, str]) -> None:
    lines = ["# written by `alertpipe devstack up`; point ALERTPIPE_DEVSTACK_ENV here to reuse this stack"]
    lines += [f"{k}={v}" for k, v in env.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="devstack-supervisor")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--components", default="redis,kafka,kube,postgres")
    p.add_argument("--no-pod-runner", action="store_true", help="do not run devstack-local's pods locally")
    p.add_argument("--brokers", type=int, default=1, help="Kafka brokers (a KRaft cluster when > 1)")
    args = p.parse_args(argv)
    run_dir: Path = args.run_dir
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    components = tuple(c for c in args.components.split(",") if c)
    # a long-lived broker (the demo, benchmarks): full JIT, peak throughput over start-up time
    stack = Stack(run_dir, tie_to_parent=True, kafka_jit="full", kafka_brokers=args.brokers)
    t0 = time.monotonic()
    _write_state(run_dir, pid=os.getpid(), status="starting", components=components)
    try:
        stack.start(components)
        if "kube" in components and not args.no_pod_runner:
            stack.pod_runner()
    except Exception as e:
        logger.error("devstack failed to start: %s", e)
        stack.stop()
        _write_state(run_dir, pid=os.getpid(), status="failed", error=str(e), timings=stack.timings)
        return 1
    total = round(time.monotonic() - t0, 2)
    env = stack.env()
    env[ENV_KEYS["pid"]] = str(os.getpid())
    write_env_file(run_dir / ENV_FILE, env)
    _write_state(
        run_dir,
        pid=os.getpid(),
        status="ready",
        components=components,
        pod_runner="kube" in components and not args.no_pod_runner,
        env=env,
        timings={**stack.timings, "total": total},
    )
    logger.info("devstack ready in %.1fs", total)
    while not stop.wait(1.0):
        pass
    logger.info("stopping the devstack")
    stack.stop()
    _write_state(run_dir, pid=os.getpid(), status="stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
