"""Deliverer benchmark: webhooks/s of one `alertpipe deliverer` process to a local 2xx sink, delivery
latency p50/p99 under a steady load, and isolation (one of four receivers dead: the other three's
throughput as a ratio of the all-healthy run).

Real Kafka and Redis (the devstack's via ALERTPIPE_DEVSTACK_ENV, or started here), the deliverer as
its own process, the sink (bench/deliverer/sink.py) as another. Throughput is measured by draining a
backlog produced before the deliverer starts (first to last 2xx at the sink); latency is alert
produced -> 2xx at the sink while alerts are produced at a fixed rate below capacity.
Prints JSON, writes bench/deliverer/results.json and deliverer.png.

    .venv/bin/python -m bench.deliverer.bench_deliverer --alerts 20000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alertpipe.workers.alerts import Alert, alert_id
from alertpipe.workers.config import PipelineConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECRET = "bench-signing-secret"  # noqa: S105 - a throwaway value for a local sink
DELIVERER_ARGS: list[str] = []  # extra `alertpipe deliverer` arguments (--http-client)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoints() -> tuple[str, str, Any]:
    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    from devstack.stack import Stack, StackEnv, new_run_dir

    if env:
        e = StackEnv.load(Path(env))
        return e.check_kafka(), e.check_redis(), None
    from devstack.paths import runs_dir

    stack = Stack(new_run_dir(runs_dir(), "bench"))
    return stack.kafka().bootstrap, stack.redis().url, stack


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback sink
        return orjson.loads(r.read())


def post(url: str) -> None:
    req = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - loopback sink
    with urllib.request.urlopen(req, timeout=10):  # noqa: S310
        pass


class Case:
    """One pipeline (unique topics and Redis prefix) with its config file and secrets folder."""

    def __init__(
        self, bootstrap: str, redis_url: str, channels: list[dict[str, Any]], work: Path, partitions: int = 6
    ) -> None:
        self.name = "b" + uuid.uuid4().hex[:10]
        self.bootstrap = bootstrap
        self.dir = work / self.name
        (self.dir / "secrets" / "hooks").mkdir(parents=True)
        (self.dir / "secrets" / "hooks" / "signing").write_text(SECRET)
        t = self.name
        self.config = PipelineConfig.model_validate(
            {
                "tenant": "bench",
                "pipeline": t,
                "kafka": {
                    "bootstrapServers": bootstrap,
                    "topics": {
                        "events": f"{t}.events",
                        "alerts": f"{t}.alerts",
                        "late": f"{t}.late",
                        "deadLetter": f"{t}.dlq",
                        "audit": f"{t}.audit",
                        "retry": f"{t}.retry",
                    },
                },
                "redis": {"url": redis_url, "keyPrefix": t},
                "delivery": {"allowPrivateNetworks": True},
                "channels": channels,
            }
        ).with_revision()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topics = self.config.kafka.topics
        new = [
            NewTopic(topics.alerts, partitions, 1),
            NewTopic(topics.dead_letter, 1, 1),
            NewTopic(topics.audit, 3, 1),
            NewTopic(f"{t}.retry", 3, 1),
        ]
        for f in admin.create_topics(new).values():
            f.result(30)
        self.config_path = self.dir / "pipeline.json"
        self.config_path.write_bytes(self.config.to_json())
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self.proc: subprocess.Popen[bytes] | None = None
        self.signal = signal.SIGTERM

    def alert(self, n: int, channel: str) -> Alert:
        now = int(time.time() * 1000)
        return Alert(
            id=alert_id("bench", self.name, "r", f"d={n}", 0),
            status="firing",
            tenant="bench",
            pipeline=self.name,
            rule="r",
            severity="warning",
            group_key=f"deviceId=d{n}",
            labels={"team": "bench"},
            annotations={"summary": f"bench alert {n}"},
            values={"value": n},
            channels=[channel],
            starts_at_ms=now,
            event_time_ms=now,
            processed_at_ms=now,
        )

    def produce(self, alerts: list[Alert]) -> None:
        topic = self.config.kafka.topics.alerts
        for a in alerts:
            self.producer.produce(topic, key=a.id, value=a.to_json())
            self.producer.poll(0)
        self.producer.flush(60)

    def start(self, log: Path) -> None:
        prof = os.environ.get("BENCH_PROFILE")  # pyinstrument text report (wall time)
        cprof = os.environ.get("BENCH_CPROFILE")  # cProfile stats file (CPU of the event loop thread)
        pre = ["-m", "pyinstrument", "-r", "text", "-o", prof] if prof else []
        pre = ["-m", "cProfile", "-o", cprof] if cprof else pre
        self.signal = signal.SIGINT if prof or cprof else signal.SIGTERM
        argv = [
            sys.executable,
            *pre,
            "-m",
            "alertpipe",
            "--log-level=WARNING",
            "deliverer",
            "--config",
            f"file:{self.config_path}",
            "--secrets-dir",
            str(self.dir / "secrets"),
            "--metrics-port",
            "0",
            *DELIVERER_ARGS,
        ]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=open(log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(self.signal)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def channel(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "webhook": {"url": url, "timeout": "2s", "signingSecretRef": {"name": "hooks", "key": "signing"}},
        "rateLimitPerSecond": 1_000_000,
        "maxConcurrency": kw.pop("concurrency", 64),
        "retry": {"maxAttempts": 10, "maxAge": "120s", "initialBackoff": "100ms", "maxBackoff": "2s"},
        **kw,
    }


def wait_keys(
    sink: str, paths: list[str], expected: int, timeout: float, case: Case | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        if case is not None and case.proc is not None and case.proc.poll() is not None:
            raise RuntimeError(f"the deliverer exited with {case.proc.returncode}: see its log")
        st = get(sink + "/stats")
        got = sum(st.get(p, {}).get("keys", 0) for p in paths)
        if got >= expected:
            return dict(st)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{got}/{expected} delivered after {timeout:g}s")
        time.sleep(0.2)


def drain_rate(st: dict[str, Any], paths: list[str]) -> tuple[float, int, float]:
    keys = sum(st[p]["keys"] for p in paths)
    first = min(st[p]["first"] for p in paths)
    last = max(st[p]["last"] for p in paths)
    return keys / max(last - first, 1e-6), keys, last - first


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def throughput_and_latency(
    bootstrap: str, redis_url: str, sink: str, work: Path, n: int, rate: int, seconds: int, sink_pid: int
) -> dict[str, Any]:
    post(sink + "/reset")
    case = Case(bootstrap, redis_url, [channel("sink", sink + "/hook/sink", concurrency=128)], work)
    case.produce([case.alert(i, "sink") for i in range(n)])
    load0 = os.getloadavg()[0]
    sink_cpu0 = cpu_seconds(sink_pid)
    case.start(work / "deliverer-throughput.log")
    try:
        cpu0 = case.cpu_seconds()
        st = wait_keys(sink, ["/hook/sink"], n, 600, case)
        cpu = case.cpu_seconds() - cpu0
        sink_cpu = cpu_seconds(sink_pid) - sink_cpu0
        load1 = os.getloadavg()[0]
        per_s, keys, took = drain_rate(st, ["/hook/sink"])
        requests = st["/hook/sink"]["requests"]
        # steady load below capacity: latency produced -> 2xx
        post(sink + "/reset")
        t_end = time.monotonic() + seconds
        i = n
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            case.produce([case.alert(i + k, "sink") for k in range(rate // 10)])
            i += rate // 10
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
        st2 = wait_keys(sink, ["/hook/sink"], i - n, 120, case)
        lat = get(sink + "/stats?latencies=1")["/hook/sink"]["latencies"]
    finally:
        case.stop()
    return {
        "alerts": n,
        "webhooks_per_s": round(per_s, 1),
        "drain_seconds": round(took, 2),
        "requests": requests,
        "duplicates": requests - keys,
        "deliverer_cpu_seconds": round(cpu, 2),
        "cpu_ms_per_webhook": round(1000 * cpu / keys, 3),
        "sink_cpu_ms_per_webhook": round(1000 * sink_cpu / keys, 3),
        "load_avg_1m_before_after": [round(load0, 2), round(load1, 2)],
        "steady_rate_per_s": rate,
        "steady_seconds": seconds,
        "steady_delivered": st2["/hook/sink"]["keys"],
        "latency_p50_ms": round(1000 * pct(lat, 0.5), 1),
        "latency_p99_ms": round(1000 * pct(lat, 0.99), 1),
        "latency_max_ms": round(1000 * max(lat), 1),
        "latencies_ms": [round(x * 1000, 2) for x in lat],
    }


def isolation(bootstrap: str, redis_url: str, sink: str, work: Path, n: int, rounds: int) -> dict[str, Any]:
    """All-healthy and one-dead runs, alternated ``rounds`` times (the machine's load drifts); medians."""
    healthy_paths = ["/hook/b", "/hook/c", "/hook/d"]
    runs: dict[str, list[dict[str, Any]]] = {"all_healthy": [], "one_dead": []}
    for _ in range(rounds):
        for label in runs:
            dead = f"http://127.0.0.1:{free_port()}/hook/a"  # nothing listens: connection refused
            a_url = sink + "/hook/a" if label == "all_healthy" else dead
            post(sink + "/reset")
            chans = [channel("a", a_url)] + [channel(c, f"{sink}/hook/{c}") for c in "bcd"]
            case = Case(bootstrap, redis_url, chans, work)
            case.produce([case.alert(i, "abcd"[i % 4]) for i in range(n)])
            case.start(work / f"deliverer-{label}.log")
            try:
                expected = sum(1 for i in range(n) if i % 4)
                st = wait_keys(sink, healthy_paths, expected, 600, case)
                cpu = case.cpu_seconds()
            finally:
                case.stop()
            per_s, keys, took = drain_rate(st, healthy_paths)
            runs[label].append(
                {
                    "healthy_three_per_s": round(per_s, 1),
                    "delivered": keys,
                    "seconds": round(took, 2),
                    "a_requests": st.get("/hook/a", {}).get("requests", 0),
                    "deliverer_cpu_ms_per_healthy_delivery": round(1000 * cpu / max(keys, 1), 3),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
            )
    out: dict[str, Any] = {"alerts_per_run": n, "runs": runs}
    for label, rs in runs.items():
        rates = sorted(r["healthy_three_per_s"] for r in rs)
        cpus = sorted(r["deliverer_cpu_ms_per_healthy_delivery"] for r in rs)
        out[label] = {
            "healthy_three_per_s_median": rates[len(rates) // 2],
            "cpu_ms_per_healthy_delivery_median": cpus[len(cpus) // 2],
        }
    ratio = out["one_dead"]["healthy_three_per_s_median"] / out["all_healthy"]["healthy_three_per_s_median"]
    out["ratio"] = round(ratio, 3)
    # each round's dead run next to its healthy run: less exposed to the machine's load drifting
    paired = sorted(
        d["healthy_three_per_s"] / h["healthy_three_per_s"]
        for h, d in zip(runs["all_healthy"], runs["one_dead"], strict=True)
    )
    out["paired_ratio_median"] = round(paired[len(paired) // 2], 3)
    out["paired_ratios"] = [round(x, 3) for x in paired]
    return out


def http_client_ab(
    bootstrap: str, redis_url: str, sink: str, work: Path, n: int, rounds: int, sink_pid: int
) -> dict[str, Any]:
    """Drain ``n`` alerts with the lean client and with aiohttp, alternated (the load drifts); medians."""
    runs: dict[str, list[dict[str, Any]]] = {"lean": [], "aiohttp": []}
    keep = list(DELIVERER_ARGS)
    try:
        for _ in range(rounds):
            for client, rs in runs.items():
                DELIVERER_ARGS[:] = ["--http-client", client, *keep[2:]]
                r = throughput_and_latency(bootstrap, redis_url, sink, work, n, 100, 1, sink_pid)
                rs.append(
                    {k: r[k] for k in ("webhooks_per_s", "cpu_ms_per_webhook", "load_avg_1m_before_after")}
                )
    finally:
        DELIVERER_ARGS[:] = keep
    out: dict[str, Any] = {"alerts": n, "runs": runs}
    for client, rs in runs.items():
        cpu = sorted(r["cpu_ms_per_webhook"] for r in rs)
        rate = sorted(r["webhooks_per_s"] for r in rs)
        out[client] = {
            "cpu_ms_per_webhook_median": cpu[len(cpu) // 2],
            "webhooks_per_s_median": rate[len(rate) // 2],
        }
    return out


def aiohttp_baseline(sink: str, n: int = 4000, concurrency: int = 64) -> dict[str, Any]:
    """The bare aiohttp client POSTing the same-size body to the same sink: the floor under any
    aiohttp-based deliverer on this machine (CPU per request of this process)."""
    import asyncio

    import aiohttp

    body = b'{"version":1,"alert":{"processedAtMs":0}}' + b" " * 700

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            sem = asyncio.Semaphore(concurrency)
            timeout = aiohttp.ClientTimeout(total=10)

            async def one(i: int) -> None:
                async with (
                    sem,
                    s.post(
                        sink + "/hook/baseline",
                        data=body,
                        timeout=timeout,
                        headers={"Idempotency-Key": str(i)},
                    ) as r,
                ):
                    await r.read()

            await asyncio.gather(*(one(i) for i in range(200)))
            c0, t0 = time.process_time(), time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            cpu, wall = time.process_time() - c0, time.monotonic() - t0
        return {"requests": n, "per_s": round(n / wall, 1), "cpu_us_per_request": round(1e6 * cpu / n)}

    return asyncio.run(run())


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    t = res["throughput"]
    axes[0].bar(["webhooks/s"], [t["webhooks_per_s"]], color="tab:blue")
    axes[0].axhline(3000, color="red", linestyle="--", label="target 3,000/s")
    axes[0].set_title("one deliverer process, 2xx sink")
    axes[0].legend()
    lat = sorted(t["latencies_ms"])
    if lat:
        axes[1].plot(lat, [i / len(lat) for i in range(len(lat))])
        axes[1].set_xscale("log")
    axes[1].set_title(
        f"latency produced->2xx at {t['steady_rate_per_s']}/s: p50 {t['latency_p50_ms']} ms, "
        f"p99 {t['latency_p99_ms']} ms",
        fontsize=9,
    )
    axes[1].set_xlabel("ms")
    axes[1].set_ylabel("fraction")
    iso = res["isolation"]
    axes[2].bar(
        ["all healthy", "one of four dead"],
        [iso["all_healthy"]["healthy_three_per_s_median"], iso["one_dead"]["healthy_three_per_s_median"]],
        color=["tab:green", "tab:orange"],
    )
    axes[2].set_title(
        f"other three receivers' deliveries/s (ratio {iso['ratio']}, target >= 0.9)", fontsize=9
    )
    ab = res.get("http_client_ab")
    if ab:
        names = ["lean", "aiohttp"]
        axes[3].bar(
            names,
            [ab[n]["cpu_ms_per_webhook_median"] for n in names],
            color=["tab:blue", "tab:gray"],
        )
        axes[3].set_title("deliverer CPU ms per webhook by HTTP client (median, alternated)", fontsize=9)
        axes[3].axhline(1 / 3, color="red", linestyle="--", label="3,000/s on one core")
        axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=200, help="steady produce rate for the latency phase")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--isolation-alerts", type=int, default=8_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-isolation", action="store_true")
    ap.add_argument("--only-isolation", action="store_true", help="print the isolation figures only")
    ap.add_argument("--http-client", choices=("lean", "aiohttp"), default="lean")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument(
        "--ab-rounds", type=int, default=0, help="also drain --alerts with each http client, alternated"
    )
    args = ap.parse_args()
    DELIVERER_ARGS.extend(["--http-client", args.http_client, "--loop", args.loop])
    bootstrap, redis_url, stack = endpoints()
    port = free_port()
    sink_proc = subprocess.Popen(
        [sys.executable, "-m", "bench.deliverer.sink", "--port", str(port)], cwd=ROOT
    )
    sink = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="bench-deliverer-"))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                get(sink + "/stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if args.only_isolation:
            iso = isolation(bootstrap, redis_url, sink, work, args.isolation_alerts, args.rounds)
            print(json.dumps({k: v for k, v in iso.items() if k != "runs"}, indent=1))
            return
        res = {
            "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
            "http_client": args.http_client,
            "loop": args.loop,
            "aiohttp_bare_client": aiohttp_baseline(sink),
            "throughput": throughput_and_latency(
                bootstrap, redis_url, sink, work, args.alerts, args.rate, args.seconds, sink_proc.pid
            ),
        }
        if args.ab_rounds:
            res["http_client_ab"] = http_client_ab(
                bootstrap, redis_url, sink, work, args.alerts, args.ab_rounds, sink_proc.pid
            )
        if args.skip_isolation:
            t = {k: v for k, v in res["throughput"].items() if k != "latencies_ms"}
            ab = {"http_client_ab": res["http_client_ab"]} if args.ab_rounds else {}
            print(json.dumps({"aiohttp_bare_client": res["aiohttp_bare_client"], **t, **ab}, indent=1))
            return
        res["isolation"] = isolation(bootstrap, redis_url, sink, work, args.isolation_alerts, args.rounds)
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
        if stack is not None:
            stack.stop()
    slim = {**res, "throughput": {k: v for k, v in res["throughput"].items() if k != "latencies_ms"}}
    (HERE / "results.json").write_text(json.dumps(slim, indent=2) + "\n")
    plot(res, HERE / "deliverer.png")
    print(json.dumps(slim, indent=2))


if __name__ == "__main__":
    main()
