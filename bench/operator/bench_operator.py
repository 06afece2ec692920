# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, arg-type, no-any-return, call-overload, misc, no-untyped-call, attr-defined"
"""Operator latency on the devstack: AlertPipeline create -> Deployments created / Ready, rule edit ->
new ConfigMap revision, and a cold start over P pipelines x R rules; prints JSON, writes
bench/operator/results.json and operator.png (operator.log: the operator's output).

    .venv/bin/python -m bench.operator.bench_operator [--pipelines 100] [--edits 50] [--cold 50x20]

Uses ALERTPIPE_DEVSTACK_ENV's stack when set, else starts its own (Kafka + kube). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from devstack.pipeline import apply_crds

G, V = "alertpipe.io", "v1alpha1"
ROOT = Path(__file__).resolve().parents[2]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


REDIS_URL = ["redis://127.0.0.1:6379/0"]  # the stack's, set by stack(): the operator PINGs it (RedisReady)


def stack() -> tuple[str, Path, Any]:
    from devstack.stack import Stack, StackEnv, new_run_dir

    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    if env:
        e = StackEnv.load(Path(env))
        REDIS_URL[0] = e.check_redis()
        return e.check_kafka(), e.check_kube(), None
    from devstack.paths import runs_dir

    s = Stack(new_run_dir(runs_dir(), "bench-operator"))
    REDIS_URL[0] = s.redis().url
    return s.kafka().bootstrap, s.kube().kubeconfig, s


def start_operator(kubeconfig: Path, ns: str, log: Path) -> subprocess.Popen[bytes]:
    prefix = os.environ.get(
        "BENCH_OPERATOR_PREFIX", ""
    ).split()  # e.g. "-m pyinstrument -o prof.html -r html"
    args = [
        sys.executable,
        *prefix,
        "-m",
        "alertpipe",
        os.environ.get("BENCH_OPERATOR_LOG", "--log-level=WARNING"),
        "operator",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        ns,
        "--health-port",
        "0",
        "--metrics-port",
        "0",
        "--image",
        "alertpipe:bench",
    ]
    return subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def pipeline(name: str, bootstrap: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "AlertPipeline",
        "metadata": {"name": name},
        "spec": {
            "kafka": {
                "bootstrapServers": bootstrap,
                "topics": {"events": {"partitions": 1}, "alerts": {"partitions": 1}},
            },
            "redis": {"url": REDIS_URL[0]},
            "channels": [{"name": "ops", "webhook": {"url": "http://127.0.0.1:9/h"}}],
            "ruleSelector": {"matchLabels": {"pipeline": name}},
        },
    }


def rule(name: str, pipeline_name: str, threshold: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "AlertRule",
        "metadata": {"name": name, "labels": {"pipeline": pipeline_name}},
        "spec": {"threshold": {"condition": f"value > {threshold}"}, "channels": ["ops"]},
    }


def plot(results: dict[str, Any], out: Path, pipelines: int, edits: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = ["create→deployments", "create→Ready", "rule edit→revision"]
    keys = ["create_to_deployments_s", "create_to_ready_s", "rule_edit_to_revision_s"]
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], [results[k]["p50"] * 1000 for k in keys], width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [results[k]["p99"] * 1000 for k in keys], width=0.4, label="p99")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("ms (log scale)")
    ax.set_yscale("log")
    ax.set_title(f"alertpipe operator latency ({pipelines} pipelines, {edits} edits)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "operator.png")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipelines", type=int, default=100)
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between pipeline creates")
    ap.add_argument("--ready-timeout", type=float, default=180.0)
    ap.add_argument(
        "--idle-wait", type=float, default=30.0, help="seconds after the cold start before measuring idle CPU"
    )
    ap.add_argument("--cold", default="50x20", help="PIPELINESxRULES for the cold start")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "operator")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from --out/results.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        plot(json.loads((args.out / "results.json").read_text()), args.out, args.pipelines, args.edits)
        return 0
    bootstrap, kubeconfig, own = stack()
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, apps, co = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    apply_crds(api)  # the generated CRDs, Established before the operator starts
    ns = f"bench{int(time.time()) % 100000}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    log = args.out / "operator.log"
    op = start_operator(kubeconfig, ns, log)
    time.sleep(3)
    results: dict[str, Any] = {"load_average": {"start": load()}}
    try:
        # 1. create -> Deployments created, -> Ready; timestamps come from watches (no API polling load)
        seen: dict[str, float] = {}
        ready_at: dict[str, float] = {}
        stop = threading.Event()

        def watch_deployments() -> None:
            w = watch.Watch()
            # raw events: deserialising every Deployment status event into models made this thread
            # fall behind while pods got Ready, and stamp later creates late
            for ev in w.stream(apps.list_namespaced_deployment, ns, timeout_seconds=3600, deserialize=False):
                if ev["type"] == "ADDED":
                    seen.setdefault(ev["object"]["metadata"]["name"], time.monotonic())
                if stop.is_set():
                    w.stop()

        def watch_pipelines() -> None:
            w = watch.Watch()
            for ev in w.stream(
                co.list_namespaced_custom_object, G, V, ns, "alertpipelines", timeout_seconds=3600
            ):
                obj = ev["object"]
                conds = obj.get("status", {}).get("conditions", [])
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    ready_at.setdefault(obj["metadata"]["name"], time.monotonic())
                if stop.is_set():
                    w.stop()

        threads = [threading.Thread(target=f, daemon=True) for f in (watch_deployments, watch_pipelines)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        created: dict[str, float] = {}
        to_deploy, to_ready = [], []
        cpu0 = proc_cpu(op.pid)
        for i in range(args.pipelines):  # at a steady rate, so one slow pipeline does not hold up the rest
            name = f"p{i}"
            created[name] = time.monotonic()
            co.create_namespaced_custom_object(G, V, ns, "alertpipelines", pipeline(name, bootstrap))
            time.sleep(args.interval)

        def roles(name: str) -> list[str]:
            return [f"{name}-{r}" for r in ("ingestor", "evaluator", "deliverer")]

        results["load_average"]["after_creates"] = load()
        deadline = time.monotonic() + args.ready_timeout
        while time.monotonic() < deadline and not all(n in ready_at for n in created):
            time.sleep(0.1)
        for name, t0 in created.items():
            if all(r in seen for r in roles(name)):
                to_deploy.append(max(seen[r] for r in roles(name)) - t0)
            if name in ready_at:
                to_ready.append(ready_at[name] - t0)
        stop.set()
        not_ready = [n for n in created if n not in ready_at]
        if not_ready:
            results["not_ready_after_60s"] = {
                n: [
                    (c["type"], c["status"], c.get("message", ""))
                    for c in co.get_namespaced_custom_object(G, V, ns, "alertpipelines", n)
                    .get("status", {})
                    .get("conditions", [])
                    if c["status"] != "True" and c["type"] != "KillSwitchActive"
                ]
                for n in not_ready
            }
            results["not_ready_detail"] = {
                n: {
                    "deployments": [
                        (
                            d.metadata.name,
                            d.spec.replicas,
                            d.status.available_replicas,
                            d.status.ready_replicas,
                        )
                        for d in apps.list_namespaced_deployment(
                            ns, label_selector=f"alertpipe.io/pipeline={n}"
                        ).items
                    ],
                    "pods": [
                        (
                            p.metadata.name,
                            p.spec.node_name,
                            p.status.phase,
                            [(c.type, c.status) for c in (p.status.conditions or []) if c.type == "Ready"],
                        )
                        for p in core.list_namespaced_pod(
                            ns, label_selector=f"alertpipe.io/pipeline={n}"
                        ).items
                    ],
                    "status_replicas": co.get_namespaced_custom_object(G, V, ns, "alertpipelines", n)
                    .get("status", {})
                    .get("replicas"),
                }
                for n in not_ready[:5]
            }
        results["create_to_deployments_s"] = {
            "n": len(to_deploy),
            "p50": pct(to_deploy, 0.5),
            "p99": pct(to_deploy, 0.99),
            "each_ms": [round(x * 1000) for x in to_deploy],  # in create order: where the outliers are
        }
        results["operator_cpu_ms_per_pipeline_until_ready"] = (proc_cpu(op.pid) - cpu0) / args.pipelines * 1000
        results["create_to_ready_s"] = {
            "n": len(to_ready),
            "p50": pct(to_ready, 0.5),
            "p99": pct(to_ready, 0.99),
        }
        # 2. rule edit -> new revision
        co.create_namespaced_custom_object(G, V, ns, "alertrules", rule("edit-me", "p0", 0))
        time.sleep(1.0)
        edits = []
        for i in range(args.edits):
            before = json.loads(core.read_namespaced_config_map("p0-config", ns).data["config.json"])[
                "revision"
            ]
            t0 = time.monotonic()
            co.patch_namespaced_custom_object(
                G, V, ns, "alertrules", "edit-me", {"spec": {"threshold": {"condition": f"value > {i + 1}"}}}
            )
            while time.monotonic() - t0 < 10:
                rev = json.loads(core.read_namespaced_config_map("p0-config", ns).data["config.json"])[
                    "revision"
                ]
                if rev != before:
                    edits.append(time.monotonic() - t0)
                    break
                time.sleep(0.01)
        results["rule_edit_to_revision_s"] = {
            "n": len(edits),
            "p50": pct(edits, 0.5),
            "p99": pct(edits, 0.99),
        }
        # 3. cold start: P pipelines x R rules already there, operator started fresh
        p, r = (int(x) for x in args.cold.split("x"))
        op.terminate()
        op.wait(30)
        for i in range(p):
            for j in range(r):
                co.create_namespaced_custom_object(G, V, ns, "alertrules", rule(f"c{i}-r{j}", f"p{i}", j))
        results["load_average"]["before_cold_start"] = load()
        t0 = time.monotonic()
        op = start_operator(kubeconfig, ns, log)
        want = {f"p{i}" for i in range(p)}
        cold = float("nan")
        while time.monotonic() - t0 < 300:
            done = 0
            for name in want:
                cm = core.read_namespaced_config_map(f"{name}-config", ns)
                if len(json.loads(cm.data["config.json"])["rules"]) >= r:
                    done += 1
            if done == len(want):
                cold = time.monotonic() - t0
                break
            time.sleep(0.2)
        results["cold_start_reconcile_s"] = {
            "pipelines": p,
            "rules_each": r,
            "seconds_incl_process_start": cold,
            "operator_cpu_s": proc_cpu(op.pid),
        }
        # 4. idle CPU with everything reconciled
        time.sleep(args.idle_wait)  # let the last status writes of the cold start land
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{op.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        c0, w0 = cpu(), time.monotonic()
        time.sleep(20)
        results["load_average"]["end"] = load()
        results["idle_cpu_fraction"] = {
            "pipelines": args.pipelines,
            "cpu_per_wall": (cpu() - c0) / (time.monotonic() - w0),
        }
    finally:
        op.terminate()
        op.wait(30)
        core.delete_namespace(ns)
        if own is not None:
            own.stop()
    print(json.dumps(results, indent=2))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out, args.pipelines, args.edits)
    _ = statistics
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
