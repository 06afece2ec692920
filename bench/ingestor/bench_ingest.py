"""Ingestor benchmark: events/s accepted by one ingestor process, and produce latency p50/p99.

One `alertpipe ingestor` process on 127.0.0.1 against a real single-node Kafka (the devstack's: env
ALERTPIPE_DEVSTACK_ENV, ``--bootstrap``, or a broker this script starts), loaded by separate
load-generator processes (bench/ingestor/loadgen.py) posting batches of 100 events over keep-alive
connections. Every accepted event is checked against the topic's high watermarks (what was
answered 202 was written). Prints JSON, writes bench/ingestor/results.json and ingest.png.

    .venv/bin/python -m bench.ingestor.bench_ingest --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alertpipe.workers.config import PipelineConfig

HERE = Path(__file__).resolve().parent
KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bootstrap_from_args(arg: str | None) -> tuple[str, Any]:
    if arg:
        return arg, None
    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    from devstack.stack import Stack, StackEnv, new_run_dir

    if env:
        return StackEnv.load(Path(env)).check_kafka(), None
    from devstack.paths import runs_dir

    stack = Stack(new_run_dir(runs_dir(), "bench"))
    return stack.kafka().bootstrap, stack


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(timeout=30)
    time.sleep(1.0)  # let the new partitions' leaders settle before the load starts


def topic_size(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-size"})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:  # noqa: S310 - loopback only
        return str(r.read().decode())


def histogram_quantiles(text: str, name: str, qs: tuple[float, ...]) -> dict[str, float]:
    """Quantiles from a Prometheus histogram (linear interpolation inside the bucket)."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {}
    for q in qs:
        target = q * total
        prev_le, prev_c = 0.0, 0.0
        for le, c in buckets:
            if c >= target:
                if le == float("inf"):
                    out[f"p{int(q * 100)}"] = prev_le
                else:
                    frac = 0.0 if c == prev_c else (target - prev_c) / (c - prev_c)
                    out[f"p{int(q * 100)}"] = prev_le + frac * (le - prev_le)
                break
            prev_le, prev_c = le, c
    return out


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local f = io.open("%(body)s", "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %%d, "non2xx": %%d, "socket_errors": %%d, "duration_us": %%d, ' ..
    '"p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads (librdkafka's included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from bench.ingestor.loadgen import bodies

    (tmp / "body.json").write_bytes(bodies(args.batch, 1, "bench", 0)[0])
    (tmp / "post.lua").write_text(WRK_LUA % {"key": KEY, "body": tmp / "body.json"})
    out = subprocess.run(
        ["wrk", "-t", str(args.clients), "-c", str(args.connections * args.clients),
         "-d", f"{int(args.seconds)}s", "--timeout", "30s", "-s", str(tmp / "post.lua"), url + "/v1/events"],
        capture_output=True, text=True, timeout=args.seconds + 120, check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


@dataclass
class Started:
    """One `alertpipe ingestor` process serving a fresh topic."""

    server: subprocess.Popen[bytes]
    url: str
    topic: str
    tmp: Path
    log: IO[bytes]

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=60)
        self.log.close()


def start_ingestor(bootstrap: str, args: argparse.Namespace, label: str, extra: list[str]) -> Started:
    """Create a topic, start the ingestor process on it (with ``extra`` arguments), wait for /readyz."""
    topic = f"bench-{label}-{int(time.time())}"
    create_topic(bootstrap, topic, args.partitions)
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    cfg = PipelineConfig.model_validate({
        "tenant": "bench", "pipeline": "bench",
        "kafka": {"bootstrapServers": bootstrap, "topics": {
            "events": topic, "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"}},
        "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "b:"},
        "ingest": {"maxBodyBytes": 4 * 1048576},
    })
    (tmp / "config.json").write_bytes(cfg.to_json())
    (tmp / "keys").write_text(f"bench:{KEY}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "ingestor.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "alertpipe", "--log-level=WARNING", "ingestor",
         "--config", f"file:{tmp / 'config.json'}", "--api-keys-file", str(tmp / "keys"),
         "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )
    started = Started(server, url, topic, tmp, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return started
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            started.stop()
            raise SystemExit((tmp / "ingestor.log").read_text())
        time.sleep(0.2)


def run_once(bootstrap: str, args: argparse.Namespace, label: str, extra: list[str]) -> dict[str, Any]:
    started = start_ingestor(bootstrap, args, label, extra)
    server, url, topic, tmp = started.server, started.url, started.topic, started.tmp
    try:
        cpu0, t_start = cpu_seconds(server.pid), time.monotonic()
        if args.loadgen == "wrk":
            w = run_wrk(url, args, tmp)
            cpu = cpu_seconds(server.pid) - cpu0
            metrics = scrape(url)
            wall = w["duration_us"] / 1e6
            ok = w["requests"] - w["non2xx"]
            return finish(label, extra, args, bootstrap, topic, metrics, ok * args.batch, {
                "202": ok, "other": w["non2xx"], "socket_errors": w["socket_errors"]},
                ok * args.batch / wall, {"p50": w["p50_us"] / 1000, "p99": w["p99_us"] / 1000}, cpu, wall, [])
        gens = [
            subprocess.Popen(
                [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--key", KEY, "--tenant", "bench",
                 "--seconds", str(args.seconds), "--connections", str(args.connections),
                 "--batch", str(args.batch), "--offset", str(i)],
                stdout=subprocess.PIPE,
            )
            for i in range(args.clients)
        ]
        results = [orjson.loads(g.communicate(timeout=args.seconds + 120)[0]) for g in gens]
        cpu = cpu_seconds(server.pid) - cpu0
        wall = time.monotonic() - t_start
        metrics = scrape(url)
    finally:
        started.stop()
    return from_loadgens(label, extra, args, bootstrap, topic, metrics, results, cpu, wall)


def from_loadgens(label: str, extra: list[str], args: argparse.Namespace, bootstrap: str, topic: str,
                  metrics: str, results: list[dict[str, Any]], cpu: float, wall: float) -> dict[str, Any]:
    """One run's figures from its load generators' JSON lines (steady state: first and last second off)."""
    series = sorted(p for r in results for p in r["series"])
    events = sum(r["events"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    t0, t1 = series[0][0] + 1.0, series[-1][0] - 1.0
    steady = [p for p in series if t0 <= p[0] <= t1]
    rate = len(steady) * args.batch / max(1e-9, t1 - t0)
    lat = [p[1] for p in steady]
    return finish(label, extra, args, bootstrap, topic, metrics, events, statuses, rate,
                  {"p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000}, cpu, wall, series)


def finish(label: str, extra: list[str], args: argparse.Namespace, bootstrap: str, topic: str, metrics: str,
           events: int, statuses: dict[str, int], rate: float, lat_ms: dict[str, float], cpu: float,
           wall: float, series: list[Any]) -> dict[str, Any]:
    written = topic_size(bootstrap, topic)
    return {
        "label": label,
        "loadgen": args.loadgen,
        "server_args": extra,
        "batch": args.batch,
        "connections": args.connections * args.clients,
        "seconds": round(wall, 2),
        "events_accepted": events,
        "events_in_topic": written,
        "statuses": statuses,
        "events_per_second": round(rate),
        "ingestor_cpu_seconds": round(cpu, 2),
        "ingestor_cpu_utilisation": round(cpu / wall, 2),
        # what one fully available core would sustain: accepted events per CPU-second of the process
        "events_per_cpu_second": round(events / cpu) if cpu else None,
        "load_average_1m": os.getloadavg()[0],
        "request_latency_ms": {k: round(v, 2) for k, v in lat_ms.items()},
        "produce_latency_ms": {
            k: round(v * 1000, 2)
            for k, v in histogram_quantiles(
                metrics, "alertpipe_ingestor_produce_latency_seconds", (0.5, 0.99)
            ).items()
        },
    }


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in runs]
    x = range(len(runs))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    w = 0.38
    ax1.bar([i - w / 2 for i in x], [r["events_per_second"] for r in runs], w, label="events/s accepted")
    ax1.bar([i + w / 2 for i in x], [r["events_per_cpu_second"] or 0 for r in runs], w,
            label="events per ingestor CPU-second")
    ax1.axhline(50_000, color="grey", linestyle="--", label="target 50,000 ev/s")
    ax1.set_xticks(list(x), labels)
    ax1.set_ylabel("events")
    r0 = runs[0]
    ax1.set_title(f"one ingestor process, batches of {r0['batch']} (load avg {r0['load_average_1m']:.1f})")
    ax1.legend(fontsize=8)
    for k, (name, key) in enumerate((("request", "request_latency_ms"), ("produce", "produce_latency_ms"))):
        for j, q in enumerate(("p50", "p99")):
            off = (k * 2 + j - 1.5) * 0.2
            ax2.bar([i + off for i in x], [r[key].get(q, 0) for r in runs], 0.2, label=f"{name} {q}")
    ax2.set_xticks(list(x), labels)
    ax2.set_ylabel("ms")
    ax2.set_title("latency: request (client) and produce→ack (server histogram)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=32, help="per load-generator process")
    ap.add_argument("--clients", type=int, default=1, help="load-generator processes")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=6)
    default_gen = "wrk" if shutil.which("wrk") else "python"
    ap.add_argument("--loadgen", choices=("wrk", "python"), default=default_gen)
    ap.add_argument("--variant", action="append", default=None,
                    help="label=server args, e.g. 'uvloop=--uvloop' (default: one plain run)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--plot", default=str(HERE / "ingest.png"))
    args = ap.parse_args()
    bootstrap, stack = bootstrap_from_args(args.bootstrap)
    try:
        variants = [v.split("=", 1) for v in (args.variant or ["default="])]
        runs = [run_once(bootstrap, args, label, extra.split()) for label, extra in variants]
    finally:
        if stack is not None:
            stack.stop()
    plot(runs, Path(args.plot))
    report = {"benchmark": "ingestor", "target_events_per_second": 50_000, "cpus": os.cpu_count(),
              "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
