"""gRPC ingest benchmark beside the HTTP one: events/s accepted by one ingestor process serving both.

The same `alertpipe ingestor` process and Kafka as bench_ingest (helpers shared), loaded in turn by
the HTTP load generator (POST batches of 100), by gRPC ``Publish`` calls (unary, batches of 100) and
by gRPC ``PublishStream`` streams (batches of 100, a window of batches in flight per stream), each
from separate processes; ``unary-tls`` and ``stream-tls`` do the same over TLS (``--grpc-tls-cert``,
a throwaway CA from devstack.secure). Every accepted event is checked against the topic. Prints JSON, writes
bench/ingestor/grpc_results.json and grpc.png.

    PYTHONSAFEPATH= .venv/bin/python -m bench.ingestor.bench_grpc --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.ingestor.bench_ingest import (
    HERE,
    KEY,
    bootstrap_from_args,
    cpu_seconds,
    free_port,
    from_loadgens,
    plot,
    scrape,
    start_ingestor,
)
from devstack.secure import make_tls

ROOT = HERE.parents[1]


def loadgen_argv(mode: str, args: argparse.Namespace, url: str, grpc_target: str, i: int,
                 ca: Path | None = None) -> list[str]:
    common = ["--key", KEY, "--tenant", "bench", "--seconds", str(args.seconds), "--batch", str(args.batch),
              "--offset", str(i)]
    if mode == "http":
        return [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--connections",
                str(args.connections), *common]
    tls = ["--ca", str(ca)] if ca is not None else []
    return [sys.executable, "-m", "bench.ingestor.grpc_loadgen", "--target", grpc_target, "--mode", mode,
            "--concurrency", str(args.connections if mode == "unary" else args.streams),
            "--window", str(args.window), *tls, *common]


def run(bootstrap: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    mode = label.removesuffix("-tls")
    gport = free_port()
    extra = ["--grpc-port", str(gport)]
    ca = None
    if label.endswith("-tls"):
        tls = make_tls(Path(tempfile.mkdtemp(prefix="grpc-bench-tls-")))
        extra += ["--grpc-tls-cert", str(tls / "tls.crt"), "--grpc-tls-key", str(tls / "tls.key")]
        ca = tls / "ca.crt"
    started = start_ingestor(bootstrap, args, label, extra)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}  # bench.* from the checkout
    try:
        cpu0, t0 = cpu_seconds(started.server.pid), time.monotonic()
        gens = [
            subprocess.Popen(loadgen_argv(mode, args, started.url, f"127.0.0.1:{gport}", i, ca),
                             stdout=subprocess.PIPE, cwd=ROOT, env=env)
            for i in range(args.clients)
        ]
        results = [orjson.loads(g.communicate(timeout=args.seconds + 120)[0]) for g in gens]
        cpu = cpu_seconds(started.server.pid) - cpu0
        wall = time.monotonic() - t0
        metrics = scrape(started.url)
    finally:
        started.stop()
    out = from_loadgens(label, extra, args, bootstrap, started.topic, metrics, results, cpu, wall)
    out["loadgen"] = "python-grpc" if mode != "http" else "python"
    if mode == "stream":
        out["streams"], out["window"] = args.streams * args.clients, args.window
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32, help="HTTP connections / unary calls in flight")
    ap.add_argument("--streams", type=int, default=4, help="gRPC streams per load generator")
    ap.add_argument("--window", type=int, default=8, help="batches in flight per stream")
    ap.add_argument("--clients", type=int, default=1, help="load-generator processes")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--mode", action="append", default=None,
                    choices=("http", "unary", "stream", "unary-tls", "stream-tls"))
    ap.add_argument("--out", default=str(HERE / "grpc_results.json"))
    ap.add_argument("--plot", default=str(HERE / "grpc.png"))
    args = ap.parse_args()
    args.loadgen = "python"  # what bench_ingest's report names; gRPC runs say python-grpc
    bootstrap, stack = bootstrap_from_args(args.bootstrap)
    try:
        runs = [run(bootstrap, args, mode) for mode in (args.mode or ["http", "unary", "stream"])]
    finally:
        if stack is not None:
            stack.stop()
    plot(runs, Path(args.plot))
    report = {"benchmark": "ingestor-grpc", "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
              "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
