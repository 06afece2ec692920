# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, arg-type, no-any-return, misc, attr-defined"
"""End-to-end latency under load: ``alertpipe generate`` -> ingestor -> Kafka -> evaluator -> Kafka ->
deliverer -> a local webhook receiver, every stage its own process (the workers in their local
mode: a config file, as the pod runner would start them, without the operator in the loop).

Latency = receiver arrival - the *planned* send time of the triggering event (open loop: a
generator that falls behind does not hide latency), over the alerts of the ledger that nothing in
the engine holds back by design (a device's first lateness bound, gaps). Per-hop breakdown from the
stamps each alert carries: planned send -> ingested (ingestTimeMs: the event's Kafka timestamp at
the ingestor) -> evaluated (processedAtMs) -> sent by the deliverer (sentAtMs) -> received; the
client's POST -> 202 time and the deliverer's read delay (alert produced -> read: its acknowledgement
is inside, a consumer sees acknowledged records only) come from the ledger and the workers'
histograms. Cases: a latency-throughput curve up to
saturation (1k and 10k ev/s steady are points of it), 80 % of the measured maximum, a burst (10x
for 30 s) and the time back under the SLO. Prints JSON, writes bench/e2e/results.json and e2e.png.

    .venv/bin/python -m bench.e2e.bench_e2e [--quick] [--rates 1000,10000] [--seconds 25]

Uses ALERTPIPE_DEVSTACK_ENV's Kafka and Redis when set, else starts its own. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alertpipe.generate import Plan, Scenario, parse_schedule, percentiles, run_http
from alertpipe.workers.config import PipelineConfig
from bench.e2e.stalls import stalls

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
API_KEY = "bench-e2e-key-0123456789abcdef"
SLO_MS = 50.0  # the p99 goal at 10k ev/s
PARTITIONS = 3


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback
        return bytes(r.read())


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
            return int(r.status)
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def infra_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of the stack's Kafka broker and Redis (when this benchmark started them)."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def endpoints() -> tuple[str, str, Any]:
    from devstack.stack import Stack, StackEnv, new_run_dir

    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    if env:
        e = StackEnv.load(Path(env))
        return e.check_kafka(), e.check_redis(), None
    from devstack.paths import runs_dir

    stack = Stack(new_run_dir(runs_dir(), "bench-e2e"))
    return stack.kafka().bootstrap, stack.redis().url, stack


def scrape(address: str) -> dict[str, float]:
    """name{labels} -> value of a /metrics page."""
    out: dict[str, float] = {}
    for line in get(f"http://{address}/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def hist_totals(metrics: dict[str, float], name: str) -> tuple[float, float]:
    """(sum, count) of a histogram over all its label sets."""
    s = sum(v for k, v in metrics.items() if k.startswith(name + "_sum"))
    c = sum(v for k, v in metrics.items() if k.startswith(name + "_count"))
    return s, c


def gc_summary(metrics: dict[str, float]) -> dict[str, float]:
    """A worker's garbage collections since it started: count and seconds paused."""
    s, c = hist_totals(metrics, "alertpipe_gc_pause_seconds")
    return {"collections": c, "seconds": round(s, 3)}


def hist_mean_ms(metrics: dict[str, float], name: str) -> float | None:
    s, c = hist_totals(metrics, name)
    return round(s / c * 1000, 2) if c else None


class Pipeline:
    """One pipeline (unique topics, Redis prefix): its config file and its three worker processes."""

    def __init__(self, bootstrap: str, redis_url: str, receiver: str, work: Path, args: dict[str, list[str]]) -> None:
        self.name = "e" + uuid.uuid4().hex[:10]
        self.dir = work / self.name
        self.dir.mkdir(parents=True)
        t = self.name
        self.raw: dict[str, Any] = {
            "tenant": "bench", "pipeline": t,
            "kafka": {"bootstrapServers": bootstrap, "topics": {
                "events": f"{t}.events", "alerts": f"{t}.alerts", "late": f"{t}.late",
                "deadLetter": f"{t}.dlq", "audit": f"{t}.audit"}},
            "redis": {"url": redis_url, "keyPrefix": t},
            "idleTimeout": "2s",  # the stream's end: held first events and timers are released soon
            "delivery": {"allowPrivateNetworks": True},
            "channels": [{"name": "ops", "webhook": {"url": f"{receiver}/hook/{t}", "timeout": "2s"},
                          "rateLimitPerSecond": 1_000_000}],
        }
        self.config = PipelineConfig.model_validate(self.raw)
        self.bootstrap = bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        tp = self.config.kafka.topics
        new = [NewTopic(tp.events, PARTITIONS, 1), NewTopic(tp.alerts, 2, 1), NewTopic(tp.late, 1, 1),
               NewTopic(tp.dead_letter, 1, 1), NewTopic(tp.audit, 1, 1)]
        for f in admin.create_topics(new).values():
            f.result(30)
        (self.dir / "keys").write_text(f"bench:{API_KEY}\n")
        self.port = free_port()
        self.ev_port = free_port()
        self.dl_port = free_port()
        self.args = args
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        cfg = PipelineConfig.model_validate({**self.raw, "rules": rules}).with_revision()
        self.config = cfg
        (self.dir / "pipeline.json").write_bytes(cfg.to_json())

    def start(self) -> None:
        cfg = f"file:{self.dir / 'pipeline.json'}"
        common = [sys.executable, "-m", "alertpipe", "--log-level=WARNING"]
        cmds = {
            "ingestor": [*common, "ingestor", "--config", cfg, "--host", "127.0.0.1", "--port", str(self.port),
                         "--api-keys-file", str(self.dir / "keys"), *self.args.get("ingestor", [])],
            "evaluator": [*common, "evaluator", "--config", cfg, "--metrics-host", "127.0.0.1",
                          "--metrics-port", str(self.ev_port), *self.args.get("evaluator", [])],
            "deliverer": [*common, "deliverer", "--config", cfg, "--metrics-host", "127.0.0.1",
                          "--metrics-port", str(self.dl_port), *self.args.get("deliverer", [])],
        }
        for role, argv in cmds.items():
            log = open(self.dir / f"{role}.log", "ab")  # noqa: SIM115 - the child keeps it
            self.procs[role] = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ok = (status(f"http://127.0.0.1:{self.port}/readyz") == 200
                  and status(f"http://127.0.0.1:{self.dl_port}/readyz") == 200
                  and self.metric("evaluator", "alertpipe_evaluator_assigned_partitions") == PARTITIONS)
            if ok:
                return
            for role, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{role} exited: {(self.dir / f'{role}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("workers not ready in 60 s")

    def metric(self, role: str, name: str) -> float:
        port = self.ev_port if role == "evaluator" else self.dl_port
        try:
            m = scrape(f"127.0.0.1:{port}")
        except OSError:
            return -1
        return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))

    def cpu(self) -> dict[str, float]:
        return {role: cpu_seconds(p.pid) for role, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_case(label: str, schedule: str, seconds: float, ctx: dict[str, Any], devices: int = 1000) -> dict[str, Any]:
    pipe = Pipeline(ctx["bootstrap"], ctx["redis"], ctx["receiver"], ctx["work"], ctx["args"])
    scenario = Scenario("bench", pipe.name, parse_schedule(schedule), seconds, devices=devices, flappers=0.3,
                        episode_every_s=6.0, episode_len_s=2.0, seed=11)
    pipe.set_rules(Plan(scenario, 0).rules())
    pipe.start()
    try:
        plan = Plan(scenario, start_ms=int((time.time() + 0.3) * 1000))
        infra = ctx["infra"]
        cpu0, t0 = {**pipe.cpu(), **infra_cpu(infra), "generator": cpu_seconds(os.getpid())}, time.time()
        ledger = asyncio.run(run_http(plan, f"http://127.0.0.1:{pipe.port}/v1/events", API_KEY,
                                      batch=ctx["batch"], linger_ms=ctx["linger"]))
        cpu1, t1 = {**pipe.cpu(), **infra_cpu(infra), "generator": cpu_seconds(os.getpid())}, time.time()
        want = {f"{e.id}:{e.status}:ops": e for e in ledger.expected if e.due_s is not None}
        deadline = time.time() + ctx["drain"]
        rows: list[list[Any]] = []
        while time.time() < deadline:
            rows = orjson.loads(get(f"{ctx['receiver']}/records/{pipe.name}"))
            if {r[0] for r in rows} >= set(want):
                break
            time.sleep(0.5)
        t_end = time.time()
        ev_metrics = scrape(f"127.0.0.1:{pipe.ev_port}")
        dl_metrics = scrape(f"127.0.0.1:{pipe.dl_port}")
        in_metrics = scrape(f"127.0.0.1:{pipe.port}")
    finally:
        pipe.stop()
    start = plan.start_ms
    got = {r[0]: r for r in rows}
    lat: list[float] = []
    hops: dict[str, list[float]] = {"post_to_ingested": [], "ingested_to_evaluated": [],
                                    "evaluated_to_sent": [], "sent_to_received": []}
    series: list[tuple[float, float]] = []  # (trigger planned time s, latency ms) for the burst plot
    for key, e in want.items():
        r = got.get(key)
        if r is None or not e.exact or e.trigger_s is None:
            continue
        planned = start + e.trigger_s * 1000
        arrival, sent, processed, ingest = r[1], r[2], r[3], r[4]
        lat.append(arrival - planned)
        series.append((e.trigger_s, arrival - planned))
        if None not in (sent, processed, ingest):
            hops["post_to_ingested"].append(ingest - planned)
            hops["ingested_to_evaluated"].append(processed - ingest)
            hops["evaluated_to_sent"].append(sent - processed)
            hops["sent_to_received"].append(arrival - sent)
    missing = len(set(want) - set(got))
    extra = len(set(got) - {f"{e.id}:{e.status}:ops" for e in ledger.expected})
    summary = ledger.summary()
    out: dict[str, Any] = {
        "label": label, "schedule": schedule, "seconds": seconds, "devices": devices,
        "events_sent": summary["sent"]["event"], "offered_ev_s": round(summary["sent"]["event"] / seconds),
        "alerts_expected": len(want), "alerts_measured": len(lat), "alerts_missing": missing,
        "alerts_unexpected": extra, "duplicates": len(rows) - len(got),
        "latency_ms": {k: round(v, 2) for k, v in percentiles(lat).items()},
        "hops_ms": {h: {k: round(v, 2) for k, v in percentiles(vs, (0.5, 0.99)).items()} for h, vs in hops.items()},
        "post_to_202_ms": {k: round(v, 2) for k, v in summary["ackMs"].items()},
        "generator_lateness_ms": summary["lateness"],
        "requests_not_202": summary["requests"] - summary["requestsByStatus"].get("202", 0),
        "hop_means_ms": {
            "evaluator_batch_processing": hist_mean_ms(ev_metrics, "alertpipe_evaluator_batch_processing_seconds"),
            "evaluator_checkpoint": hist_mean_ms(ev_metrics, "alertpipe_evaluator_checkpoint_seconds"),
            "deliverer_read_delay": hist_mean_ms(dl_metrics, "alertpipe_deliverer_read_delay_seconds"),
            "deliverer_e2e_ingest_basis": hist_mean_ms(dl_metrics, "alertpipe_e2e_latency_seconds"),
        },
        "evaluator_loop_seconds": {k.split('"')[1]: round(v, 2) for k, v in ev_metrics.items()
                                   if k.startswith("alertpipe_evaluator_loop_seconds_total{")},
        "cpu_utilisation": {role: round((cpu1[role] - cpu0[role]) / (t1 - t0), 2) for role in cpu0},
        "load_average": load(),
        # the workers' own collections (alertpipe_gc_pause_seconds) and what Redis and the broker
        # did meanwhile (bench/e2e/stalls.py): a tail that lines up with one of them is explained
        "worker_gc": {role: gc_summary(m) for role, m in
                      (("ingestor", in_metrics), ("evaluator", ev_metrics), ("deliverer", dl_metrics))},
        "infra": stalls(ctx.get("redis_log"), ctx.get("kafka_gc_log"), t0, t_end),
    }
    p99 = out["latency_ms"].get("p99", float("inf"))
    out["saturated"] = bool(missing > 0.01 * max(1, len(want)) or out["requests_not_202"] or p99 > 1000
                            or summary["lateness"].get("p99", 0) > 200)
    out["_series"] = series
    print(json.dumps({k: v for k, v in out.items() if k != "_series"}), file=sys.stderr)
    return out


def recovery_s(series: list[tuple[float, float]], burst_end: float, slo: float) -> float | None:
    """Seconds after the burst's end until every later alert is under ``slo`` (None: never)."""
    after = sorted(series)
    last_bad = max((t for t, v in after if v > slo), default=None)
    if last_bad is None:
        return 0.0
    if last_bad >= after[-1][0]:
        return None
    return round(max(0.0, last_bad - burst_end), 2)


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    curve = [c for c in results["curve"] if c["latency_ms"]]
    ax = axes[0]
    for q in ("p50", "p90", "p99", "p99.9"):
        ax.plot([c["offered_ev_s"] for c in curve], [c["latency_ms"][q] for c in curve], marker="o", label=q)
    ax.axhline(SLO_MS, color="grey", ls="--", lw=0.8, label=f"SLO {SLO_MS:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s")
    ax.set_ylabel("event -> webhook latency, ms")
    ax.set_title("latency-throughput (whole pipeline, 2 cores)")
    ax.legend()
    ax = axes[1]
    hop_names = ["post_to_ingested", "ingested_to_evaluated", "evaluated_to_sent", "sent_to_received"]
    bottoms = [0.0] * len(curve)
    for h in hop_names:
        vals = [c["hops_ms"][h].get("p50", 0) for c in curve]
        ax.bar([str(c["offered_ev_s"]) for c in curve], vals, bottom=bottoms, label=h)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_xlabel("offered events/s")
    ax.set_ylabel("ms (p50 per hop)")
    ax.set_title("per-hop breakdown (p50)")
    ax.legend(fontsize=8)
    ax = axes[2]
    b = results.get("burst")
    if not b:
        ax.axis("off")
    else:
        xs, ys = zip(*sorted(b["_series"]), strict=True) if b["_series"] else ((), ())
        ax.scatter(xs, ys, s=3)
        ax.axvspan(b["burst_start_s"], b["burst_end_s"], color="orange", alpha=0.2, label="burst")
        ax.axhline(SLO_MS, color="grey", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("trigger planned time, s")
        ax.set_ylabel("latency, ms")
        ax.set_title(f"burst {b['schedule']}: back under SLO {b['recovery_s']} s after")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,5000,10000,20000,30000,40000")
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--burst", default="1000x10@15+30", help="base x factor @ start + length (seconds)")
    ap.add_argument("--burst-seconds", type=float, default=60.0)
    ap.add_argument("--no-burst", action="store_true")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds at 2k ev/s before measuring (0: none)")
    ap.add_argument("--quick", action="store_true", help="1k and 10k only, 15 s each, no burst")
    ap.add_argument("--batch", type=int, default=500, help="generator: events per request at most")
    ap.add_argument("--linger", type=float, default=5.0, help="generator: send due events every N ms")
    ap.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last alerts")
    ap.add_argument("--ingestor-args", default="")
    ap.add_argument("--evaluator-args", default="")
    ap.add_argument("--deliverer-args", default="")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    if args.quick:
        args.rates, args.seconds, args.no_burst = "1000,10000", 15.0, True
    bootstrap, redis_url, stack = endpoints()
    rport = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.e2e.receiver", "--port", str(rport)], cwd=ROOT)
    work = ROOT / ".devstack" / "runs" / f"bench-e2e-{uuid.uuid4().hex[:6]}"
    infra: dict[str, int] = {}
    logs: dict[str, Path] = {}
    if stack is not None:
        infra = {"kafka": stack.kafka().process.pid, "redis": stack.redis().process.pid}
        logs = {"redis_log": stack.redis().dir / "redis.log", "kafka_gc_log": stack.kafka().dir / "gc.log"}
    ctx = {"infra": infra, **logs, "bootstrap": bootstrap, "redis": redis_url, "receiver": f"http://127.0.0.1:{rport}", "work": work,
           "batch": args.batch, "linger": args.linger, "drain": args.drain,
           "args": {"ingestor": args.ingestor_args.split(), "evaluator": args.evaluator_args.split(),
                    "deliverer": args.deliverer_args.split()}}
    results: dict[str, Any] = {"benchmark": "e2e", "label": args.label, "cpus": os.cpu_count(),
                               "slo_p99_ms": SLO_MS, "load_average_start": load(),
                               "worker_args": ctx["args"], "curve": []}
    try:
        deadline = time.monotonic() + 20
        while status(f"http://127.0.0.1:{rport}/records/x") != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        if args.warmup:  # a fresh broker's JIT and page cache: not measured
            w = run_case("warmup", "steady:2000", args.warmup, ctx)
            results["warmup"] = {k: w[k] for k in ("latency_ms", "cpu_utilisation")}
        max_ok = 0
        for rate in [int(r) for r in args.rates.split(",")]:
            case = run_case(f"steady_{rate}", f"steady:{rate}", args.seconds, ctx)
            results["curve"].append(case)
            if case["saturated"]:
                results["saturates_at_ev_s"] = case["offered_ev_s"]
                break
            max_ok = case["offered_ev_s"]
        results["max_sustained_ev_s"] = max_ok
        if max_ok and not args.quick and len(results["curve"]) > 1:
            r80 = int(max_ok * 0.8)
            results["at_80pct_of_max"] = run_case(f"steady_{r80}", f"steady:{r80}", args.seconds, ctx)
        if not args.no_burst:
            sched = parse_schedule(f"burst:{args.burst}")
            b = run_case("burst", sched.text(), args.burst_seconds, ctx)
            b["burst_start_s"], b["burst_end_s"] = sched.at, sched.at + sched.length
            end = sched.at + sched.length
            b["recovery_s"] = recovery_s(b["_series"], end, SLO_MS)
            before = [v for t, v in b["_series"] if t < sched.at]
            inside = [v for t, v in b["_series"] if sched.at <= t < end]
            after = [v for t, v in b["_series"] if t >= end]
            base = percentiles(before).get("p99", SLO_MS)
            b["pre_burst_p99_ms"] = round(base, 2)
            b["recovery_to_pre_burst_p99_s"] = recovery_s(b["_series"], end, max(SLO_MS, base))
            for name, vals in (("before", before), ("in_burst", inside), ("after", after)):
                b[f"latency_{name}_ms"] = {k: round(v, 2) for k, v in percentiles(vals).items()}
            results["burst"] = b
        results["load_average_end"] = load()
    finally:
        receiver.terminate()
        receiver.wait(10)
        if stack is not None:
            stack.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    if results["curve"]:
        plot(results, args.out / f"e2e{'-' + args.label if args.label else ''}.png")

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items() if k != "_series"}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    doc = json.dumps(clean(results), indent=2)
    print(doc)
    (args.out / f"results{'-' + args.label if args.label else ''}.json").write_text(doc + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
