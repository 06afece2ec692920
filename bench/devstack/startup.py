"""Devstack start-up benchmark: warm start of the whole stack, per component, and its teardown.

Each run starts Redis, Kafka and the control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok + nodes Ready) concurrently in a fresh run directory, exactly as a test session or
``alertpipe devstack up`` does, then stops it. "Warm" means provisioned: binaries and jars are in the
cache (a provisioning check that finds everything is timed too). Prints JSON, writes
bench/devstack/results.json and startup.png.

    .venv/bin/python -m bench.devstack.startup --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from devstack.cached import missing
from devstack.stack import Stack

HERE = Path(__file__).resolve().parent
COMPONENTS = ["redis", "kafka", "kube/etcd", "kube/kube-apiserver", "kube/kube-controller-manager",
              "kube/kube-scheduler", "kube/kwok+nodes", "kube"]  # fmt: skip


def one_run(root: Path, i: int, kafka_jit: str) -> dict[str, float]:
    stack = Stack(root / f"run-{i}", kafka_jit=kafka_jit)
    t0 = time.monotonic()
    try:
        stack.start(("redis", "kafka", "kube"))
        total = time.monotonic() - t0
        t1 = time.monotonic()
        stack.pod_runner()
        runner = time.monotonic() - t1
    finally:
        t2 = time.monotonic()
        stack.stop()
        stop = time.monotonic() - t2
    return {**stack.timings, "pod-runner": round(runner, 3), "total": round(total, 2), "stop": round(stop, 2)}


def plot(runs: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [*COMPONENTS, "total", "stop"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(runs)
    for r, run in enumerate(runs):
        xs = [k + r * width for k in range(len(keys))]
        ax.bar(xs, [run.get(k, 0.0) for k in keys], width=width, label=f"run {r + 1}")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
    ax.set_xticklabels([k.replace("kube/", "") for k in keys], rotation=30, ha="right")
    ax.set_ylabel("seconds")
    ax.axhline(30, color="red", linestyle="--", linewidth=1, label="goal: whole stack ≤ 30 s")
    ax.set_title(f"devstack warm start-up on {os.cpu_count()} cores (components start concurrently)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--kafka-jit", choices=["fast", "full"], default="fast", help="fast: test sessions; full: up"
    )
    args = p.parse_args()
    t0 = time.monotonic()
    gone = missing()
    check = time.monotonic() - t0
    if gone:
        raise SystemExit(f"not provisioned: {', '.join(gone)}; run `alertpipe devstack provision` first")
    with tempfile.TemporaryDirectory(prefix="devstack-bench-") as tmp:
        runs = [one_run(Path(tmp), i, args.kafka_jit) for i in range(args.runs)]
    summary: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "kafka_jit": args.kafka_jit,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "provision_check_s": round(check, 3),
        "runs": runs,
        "median": {k: round(statistics.median(r.get(k, 0.0) for r in runs), 2) for k in runs[0]},
    }
    (HERE / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(runs, HERE / "startup.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
