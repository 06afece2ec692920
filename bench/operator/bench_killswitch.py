# mypy: disable-error-code="index, union-attr, no-untyped-call, no-any-return"
"""Kill-switch latency on the devstack: an AlertPipeline spec patch (stopEvaluation + stopDelivery on,
then off) -> the new ConfigMap revision -> the evaluator and the deliverer (real processes watching
that ConfigMap) loaded it -> their effect (the ``*_paused`` gauges flip); prints JSON, writes a PNG.

    .venv/bin/python -m bench.operator.bench_killswitch [--flips 20]

Uses ALERTPIPE_DEVSTACK_ENV's stack when set, else starts its own (Redis + Kafka + kube). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config

from bench.operator.bench_operator import ROOT, G, V, load, pct, start_operator
from devstack.pipeline import apply_crds
from devstack.processes import free_port

ROLES = ("evaluator", "deliverer")


def stack() -> tuple[str, str, Path, Any]:
    from devstack.stack import Stack, StackEnv, new_run_dir

    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    if env:
        e = StackEnv.load(Path(env))
        return e.check_kafka(), e.check_redis(), e.check_kube(), None
    from devstack.paths import runs_dir

    s = Stack(new_run_dir(runs_dir(), "bench-killswitch"))
    return s.kafka().bootstrap, s.redis().url, s.kube().kubeconfig, s


def pipeline(bootstrap: str, redis_url: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "AlertPipeline",
        "metadata": {"name": "ks"},
        "spec": {
            "kafka": {
                "bootstrapServers": bootstrap,
                "topics": {"events": {"partitions": 1}, "alerts": {"partitions": 1}},
            },
            "redis": {"url": redis_url},
            "channels": [{"name": "ops", "webhook": {"url": "http://127.0.0.1:9/h"}}],
            "ruleSelector": {"matchLabels": {"pipeline": "ks"}},
        },
    }


def start_worker(role: str, ns: str, kubeconfig: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "alertpipe", "--log-level=WARNING", role]
    args += [
        "--config",
        f"configmap:{ns}/ks-config",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
    ]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:  # noqa: S310
            return str(resp.read().decode())
    except OSError:
        return ""


def state(role: str, text: str) -> tuple[str | None, float | None]:
    """(loaded revision, paused gauge) from a worker's /metrics text."""
    revision = paused = None
    for line in text.splitlines():
        if line.startswith(f"alertpipe_{role}_config_revision_info{{") and line.endswith(" 1.0"):
            revision = line.split('revision="', 1)[1].split('"', 1)[0]
        elif line.startswith(f"alertpipe_{role}_paused"):
            paused = float(line.rsplit(" ", 1)[1])
    return revision, paused


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        "spec_to_configmap_s",
        *(f"spec_to_{r}_revision_s" for r in ROLES),
        *(f"spec_to_{r}_effect_s" for r in ROLES),
    ]
    labels = ["ConfigMap", *(f"{r}\nrevision" for r in ROLES), *(f"{r}\npaused flips" for r in ROLES)]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], [results[k]["p50"] * 1000 for k in keys], width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [results[k]["p99"] * 1000 for k in keys], width=0.4, label="p99")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("ms after the spec patch")
    ax.set_title(f"alertpipe kill switch: spec patch -> live ({results['flips']} flips)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "killswitch.png")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flips", type=int, default=20, help="switch changes (on, off, on, ...) to time")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one flip may take")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "operator")
    args = ap.parse_args()
    bootstrap, redis_url, kubeconfig, own = stack()
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    apply_crds(api)  # the generated CRDs, Established before the operator starts
    ns = f"benchks{int(time.time()) % 100000}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    log = args.out / "killswitch.log"
    log.unlink(missing_ok=True)
    op = start_operator(kubeconfig, ns, log)
    ports = {r: free_port() for r in ROLES}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    samples: dict[str, list[float]] = {"spec_to_configmap_s": []}
    for r in ROLES:
        samples[f"spec_to_{r}_revision_s"] = []
        samples[f"spec_to_{r}_effect_s"] = []
    results: dict[str, Any] = {"load_average": {"start": load()}}

    def revision() -> str | None:
        try:
            cm = core.read_namespaced_config_map("ks-config", ns)
        except client.ApiException:
            return None
        return json.loads(cm.data["config.json"])["revision"]

    try:
        co.create_namespaced_custom_object(G, V, ns, "alertpipelines", pipeline(bootstrap, redis_url))
        deadline = time.monotonic() + 60
        while (rev := revision()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = {r: start_worker(r, ns, kubeconfig, ports[r], log) for r in ROLES}
        deadline = time.monotonic() + 60
        while any(state(r, scrape(ports[r]))[0] != rev for r in ROLES):
            if time.monotonic() > deadline:
                raise SystemExit(f"workers never loaded revision {rev}; see {log}")
            time.sleep(0.1)
        on = {"stopEvaluation": {"reason": "bench"}, "stopDelivery": {"reason": "bench"}}
        off = {"stopEvaluation": None, "stopDelivery": None}
        for i in range(args.flips):
            want_paused = 1.0 if i % 2 == 0 else 0.0
            before = revision()
            t0 = time.monotonic()
            co.patch_namespaced_custom_object(
                G, V, ns, "alertpipelines", "ks", {"spec": {"killSwitches": on if want_paused else off}}
            )
            got: dict[str, float] = {}
            new_rev: str | None = None
            while len(got) < 1 + 2 * len(ROLES) and time.monotonic() - t0 < args.timeout:
                now = time.monotonic() - t0
                if "spec_to_configmap_s" not in got and (r0 := revision()) != before:
                    got["spec_to_configmap_s"], new_rev = now, r0
                for r in ROLES:
                    loaded, paused = state(r, scrape(ports[r]))
                    if new_rev is not None and loaded == new_rev:
                        got.setdefault(f"spec_to_{r}_revision_s", now)
                    if paused == want_paused:
                        got.setdefault(f"spec_to_{r}_effect_s", now)
                time.sleep(0.01)
            for k, v in got.items():
                samples[k].append(v)
            time.sleep(0.5)
        results["load_average"]["end"] = load()
    finally:
        for p in [*workers.values(), op]:
            p.terminate()
            p.wait(30)
        core.delete_namespace(ns)
        if own is not None:
            own.stop()
    results["flips"] = args.flips
    for k, xs in samples.items():
        results[k] = {
            "n": len(xs),
            "p50": pct(xs, 0.5),
            "p99": pct(xs, 0.99),
            "max": max(xs, default=float("nan")),
        }
    print(json.dumps(results, indent=2))
    (args.out / "killswitch.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
