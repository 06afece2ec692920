# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, arg-type, no-any-return, attr-defined, no-untyped-call"
"""Canary rollout benchmark: what a second evaluator track costs, how fast a breach rolls back, and
alerts lost / doubled across step changes under load. Prints JSON, writes results.json + canary.png.

    .venv/bin/python -m bench.canary.bench_canary [--events 300000] [--rate-devices 200] [--quick]

(a) CPU per event: one evaluator draining a preloaded topic alone, then the same topic drained by
    a stable track (90 % of the buckets) and a 10 % candidate, each in its own process; the sum of
    the two against the single track is the price of the canary (both read every record; the
    candidate skips 90 % on the Kafka key, before decoding).
(b) Breach to rollback: on the devstack (operator, pod runner, ingestor, evaluators), a candidate
    rule that fires three times as often; from the moment the candidate owns its first step to
    status Canary=RolledBack, and to its pods gone.
(c) Lost / doubled: a no-op rule change rolled through 3 step changes (10, 30, 60 %) and the
    promotion while devices send events; the alerts topic against the single-track control run.
Uses ALERTPIPE_DEVSTACK_ENV's stack when set, else starts its own. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
API_KEY = "bench-canary-key-0123456789abcdef"


# --- (a) CPU per event, one process per track -------------------------------------------------------


def drain(cfg_json: str, total: int) -> dict[str, Any]:
    """Run one evaluator until it consumed ``total`` records; its CPU seconds and wall time."""
    from alertpipe.workers.config import PipelineConfig, StaticConfigSource
    from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions

    cfg = PipelineConfig.model_validate(orjson.loads(cfg_json)).with_revision()
    ev = Evaluator(StaticConfigSource(cfg), options=EvaluatorOptions(
        checkpoint_interval=2.0, group_id=f"bench-{uuid.uuid4().hex[:8]}"))
    reg = ev.metrics.registry
    stop = threading.Event()
    marks: dict[str, float] = {}

    def value(name: str) -> float:
        return reg.get_sample_value(name, {"tenant": "bench"}) or 0.0

    def watch() -> None:
        while not stop.is_set():
            c = value("alertpipe_evaluator_events_consumed_total")
            if "t0" not in marks and c > 0:
                marks.update(t0=time.perf_counter(), cpu0=time.process_time(), c0=c)
            if c >= total:
                time.sleep(0.2)  # the last batch's evaluation
                marks.update(t1=time.perf_counter(), cpu1=time.process_time())
                stop.set()
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    ev.run(stop)
    n = total - marks["c0"]
    cpu = marks["cpu1"] - marks["cpu0"]
    return {"events": int(n), "cpu_seconds": round(cpu, 3), "seconds": round(marks["t1"] - marks["t0"], 3),
            "cpu_us_per_event": round(cpu / n * 1e6, 2),
            "evaluated": int(value("alertpipe_evaluator_events_evaluated_total")),
            "skipped": int(value("alertpipe_evaluator_events_skipped_total"))}


def in_subprocess(cfg: dict[str, Any], total: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.canary.bench_canary", "--drain", str(total)],
                         input=orjson.dumps(cfg), capture_output=True, cwd=ROOT, check=False, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"drain failed: {out.stderr.decode()[-3000:]}")
    return dict(orjson.loads(out.stdout.splitlines()[-1]))


def cpu_cost(bootstrap: str, redis_url: str, events: int, repeats: int = 3) -> dict[str, Any]:
    from bench.evaluator.bench_evaluator import config, create_topics, preload, threshold_rules

    topic = f"bench-canary-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 6, f"{topic}-alerts": 6, f"{topic}-late": 1, f"{topic}-dlq": 1})
    preload(bootstrap, topic, events, devices=20_000, types=["t0"])
    rules = threshold_rules(20, ["t0"])
    base = config(bootstrap, redis_url, topic, rules)

    def tracked(name: str, start: int, end: int) -> dict[str, Any]:
        cfg = config(bootstrap, redis_url, topic, rules)
        cfg["track"] = {"name": name, "ranges": [{"start": start, "end": end}]}
        return cfg

    def best(cfg: dict[str, Any]) -> dict[str, Any]:
        """The run with the median CPU per event of ``repeats`` (the machine is shared)."""
        # a fresh Redis prefix per run: a run must neither restore another's checkpoints nor see its dedup keys
        fresh = [{**cfg, "redis": {**cfg["redis"], "keyPrefix": f"bench:{uuid.uuid4().hex[:8]}"}}
                 for _ in range(repeats)]
        runs = sorted((in_subprocess(c, events) for c in fresh), key=lambda r: r["cpu_us_per_event"])
        return {**runs[len(runs) // 2], "runs_cpu_us_per_event": [r["cpu_us_per_event"] for r in runs]}

    single = best(base)
    stable = best(tracked("stable", 1000, 10_000))
    canary = best(tracked("candidate", 0, 1000))
    with_canary = stable["cpu_us_per_event"] + canary["cpu_us_per_event"]  # each over its own measured span
    return {
        "events": events,
        "single_track": single,
        "stable_90": stable,
        "candidate_10": canary,
        "cpu_us_per_event_single": single["cpu_us_per_event"],
        "cpu_us_per_event_with_canary": round(with_canary, 2),
        "overhead_percent": round((with_canary / single["cpu_us_per_event"] - 1) * 100, 1),
        "candidate_share_evaluated": round(canary["evaluated"] / events, 4),
        "repeats": repeats,
    }


# --- (b) and (c) on the devstack ----------------------------------------------------------------------


def devstack() -> tuple[str, str, Path, dict[str, str], Any]:
    from devstack.stack import Stack, StackEnv, new_run_dir

    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    if env:
        e = StackEnv.load(Path(env))
        from devstack.kube import LOCAL_NODE_LABEL

        return e.check_kafka(), e.check_redis(), e.check_kube(), {LOCAL_NODE_LABEL[0]: LOCAL_NODE_LABEL[1]}, None
    from devstack.kube import LOCAL_NODE_LABEL
    from devstack.paths import runs_dir

    s = Stack(new_run_dir(runs_dir(), "bench-canary"))
    s.pod_runner()
    return s.kafka().bootstrap, s.redis().url, s.kube().kubeconfig, {LOCAL_NODE_LABEL[0]: LOCAL_NODE_LABEL[1]}, s


def namespace(api: Any) -> str:
    from kubernetes import client

    from devstack.pipeline import wait_for

    name = "b" + uuid.uuid4().hex[:10]
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
             "default ServiceAccount", 60)
    return name


def rollout_runs(bootstrap: str, redis_url: str, kubeconfig: Path, selector: dict[str, str], devices: int,
                 every: float, workdir: Path) -> dict[str, Any]:
    from kubernetes import client, config

    from devstack.pipeline import apply_crds, run_operator, wait_for
    from devstack.rollout_load import EventLoad, expected, per_device, replace_rule, settle, start

    api = config.new_client_from_config(config_file=str(kubeconfig))
    apply_crds(api)
    out: dict[str, Any] = {}

    # (b) breach -> rollback
    ns = namespace(api)
    rollout = {"steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}], "warmup": "3s",
               "analysis": {"interval": "2s", "failureLimit": 1, "onNoData": "pause", "maxAlertRatio": 2}}
    with run_operator(kubeconfig, ns, workdir / f"operator-{ns}.log"):
        s, ingestor = start(api, ns, bootstrap, redis_url, selector, workdir / "op.log", API_KEY, rollout)
        load = EventLoad(ingestor, API_KEY, ns, devices=devices, every=every).start()
        try:
            wait_for(lambda: load.rounds >= 10, "events flowing", 30)
            replace_rule(s, "value % 2 == 1", "bad {{ value }}")
            wait_for(lambda: s.canary().get("phase") == "Progressing", "the first step", 120, every=0.05)
            breach = time.monotonic()
            wait_for(lambda: s.canary().get("phase") == "RolledBack", "the rollback", 180, every=0.05)
            rolled = time.monotonic()
            core = client.CoreV1Api(api)
            wait_for(lambda: not core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/component=evaluator-canary").items, "candidate gone", 60,
                every=0.1)
            gone = time.monotonic()
        finally:
            load.stop()
        out["rollback"] = {"breach_to_rolled_back_s": round(rolled - breach, 2),
                           "breach_to_candidate_gone_s": round(gone - breach, 2),
                           "message": s.canary().get("message"), "events_per_s": round(devices / every)}

    # (c) 3 step changes + promotion under load
    ns = namespace(api)
    rollout = {"steps": [{"weight": 10, "pause": "3s"}, {"weight": 30, "pause": "3s"}, {"weight": 60, "pause": "3s"}],
               "warmup": "3s", "analysis": {"interval": "2s", "failureLimit": 3, "onNoData": "pass"}}
    with run_operator(kubeconfig, ns, workdir / f"operator-{ns}.log"):
        s, ingestor = start(api, ns, bootstrap, redis_url, selector, workdir / "op.log", API_KEY, rollout)
        topic = s.config()["kafka"]["topics"]["alerts"]
        load = EventLoad(ingestor, API_KEY, ns, devices=devices, every=every).start()
        t0 = time.monotonic()
        try:
            wait_for(lambda: load.rounds >= 10, "events flowing", 30)
            replace_rule(s, "value > 80", "v2 {{ value }}")
            wait_for(lambda: s.watch_phase().get("phase") == "Succeeded", "promotion", 300, every=0.1)
            took = time.monotonic() - t0
            rounds = load.rounds
            wait_for(lambda: load.rounds >= rounds + 10, "events after promotion", 30)
        finally:
            load.stop()
        want = expected(load.sent, ns, "edge", "cpu-hot")
        got = per_device(settle(bootstrap, topic, sum(want.values())))
        seconds = load.rounds * every
        out["steps"] = {"phases": s.phases, "events": len(load.sent),
                        "events_per_s": round(len(load.sent) / max(seconds, 1e-9)),
                        "expected_transitions": sum(want.values()), "lost": sum((want - got).values()),
                        "duplicated": sum((got - want).values()), "rollout_seconds": round(took, 1)}
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 4))
    cpu = results.get("cpu", {})
    if cpu:
        bars = a.bar(["single track", "stable 90 % + canary 10 %"],
                     [cpu["cpu_us_per_event_single"], cpu["cpu_us_per_event_with_canary"]], color=["#4477aa", "#ee6677"])
        a.bar_label(bars, fmt="%.2f")
        a.set_ylabel("CPU µs per event")
        a.set_title(f"second track: {cpu['overhead_percent']:+.1f} % CPU")
    rb = results.get("rollback", {})
    if rb:
        bars = b.bar(["Canary=RolledBack", "candidate pods gone"],
                     [rb["breach_to_rolled_back_s"], rb["breach_to_candidate_gone_s"]], color="#228833")
        b.bar_label(bars, fmt="%.1f s")
        b.set_ylabel("seconds after the breach began")
        b.set_title("breach to rollback")
    st = results.get("steps", {})
    if st:
        bars = c.bar(["expected", "lost", "duplicated"], [st["expected_transitions"], st["lost"], st["duplicated"]],
                     color=["#bbbbbb", "#ee6677", "#ccbb44"])
        c.bar_label(bars, fmt="%d")
        c.set_title(f"3 step changes + promotion, {st['events_per_s']} ev/s")
        c.set_ylabel("alert transitions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000, help="preloaded events for the CPU figure")
    ap.add_argument("--rate-devices", type=int, default=500, help="devices sending in (b) and (c)")
    ap.add_argument("--every", type=float, default=0.1, help="seconds between two events of a device")
    ap.add_argument("--quick", action="store_true", help="small figures (a smoke run)")
    ap.add_argument("--drain", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--plot-only", action="store_true", help="redraw canary.png from results.json")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((HERE / "results.json").read_text()), HERE / "canary.png")
        return 0
    if args.drain:
        print(json.dumps(drain(sys.stdin.read(), args.drain)))
        return 0
    if args.quick:
        args.events, args.rate_devices = 60_000, 40
    bootstrap, redis_url, kubeconfig, selector, stack = devstack()
    work = Path(os.environ.get("BENCH_WORKDIR", ROOT / ".devstack" / "bench-canary"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results: dict[str, Any] = {"cpu": cpu_cost(bootstrap, redis_url, args.events, 1 if args.quick else 3)}
        results.update(rollout_runs(bootstrap, redis_url, kubeconfig, selector, args.rate_devices, args.every,
                                    work))
    finally:
        if stack is not None:
            stack.stop()
    results["machine"] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    print(json.dumps(results, indent=2))
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, HERE / "canary.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
