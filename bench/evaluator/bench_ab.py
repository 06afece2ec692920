"""Evaluator A/B: the whole worker (bench_evaluator's drain scenarios) at a base revision and at
this checkout, in one run on one topic, rounds alternating so both see the same machine load.

The base's sources (``git archive``) and this checkout's (the working tree, uncommitted changes
included) are copied side by side into a scratch folder, each with the import layout the wheel
gives (``alertpipe.workers``, ``alertpipe.operator``); every scenario runs bench_evaluator's
``--scenario run`` in a fresh process with one of them first on ``sys.path``. The load average is
recorded next to every figure (the machine is shared). Prints JSON, writes bench/evaluator/ab.json.

``--paced 1000,10000``: instead of draining a preloaded topic, events are produced at that rate
(from this process, open loop) while the evaluator runs: its CPU per event and the latency of its
hop, ingested (the event's Kafka timestamp) -> alert produced (``processedAtMs``), per alert.

    .venv/bin/python -m bench.evaluator.bench_ab [--base main] [--events 100000] [--rounds 3]
    .venv/bin/python -m bench.evaluator.bench_ab --paced 1000,10000 [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from bench.evaluator.bench_evaluator import (
    PARTITIONS,
    TYPES,
    _exists,
    aggregate_rules,
    config,
    create_topics,
    endpoints,
    preload,
    threshold_rules,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCES = ("alertpipe", "workers", "operator")
LATENESS_MS = 5000  # the pipeline's allowedLateness (the default)
SCENARIOS: dict[str, tuple[str, bool]] = {
    "a": ("(a) 20 threshold rules, 20 types, no dedup", False),
    "a_dedup": ("(a) 20 threshold rules, 20 types, dedup", True),
    "b": ("(b) 20 aggregate rules (1m/10s), dedup", True),
}


def layout(src: Path, dest: Path) -> Path:
    """``dest`` as a sys.path entry: alertpipe/ with workers/ and operator/ inside, bench/ beside."""
    shutil.copytree(src / "alertpipe", dest / "alertpipe")
    for name in ("workers", "operator"):
        shutil.copytree(src / name, dest / "alertpipe" / name)
    (dest / "bench").symlink_to(ROOT / "bench")  # the scenario driver is this checkout's
    return dest


def base_sources(rev: str, scratch: Path) -> Path:
    out = scratch / "base-src"
    out.mkdir()
    archive = subprocess.run(["git", "archive", rev, *SOURCES], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run(path_entry: Path, payload: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(path_entry), "PYTHONSAFEPATH": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.evaluator.bench_evaluator", "--scenario", "run"],
                         input=orjson.dumps(payload), capture_output=True, cwd=path_entry, env=env,
                         check=False, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"scenario failed: {out.stderr.decode()[-3000:]}")
    return dict(orjson.loads(out.stdout.splitlines()[-1]))


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def produce_paced(bootstrap: str, topic: str, rate: int, seconds: float, devices: int = 200) -> None:
    """bench_evaluator's events at ``rate`` per second, due every 5 ms (open loop), over few
    devices: a device's first events are held for the lateness bound by design (the reorder
    buffer), so only alerts after that (``hop_latencies``' cut-off) measure the hop."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "compression.type": "lz4"})
    rnd = random.Random(3)
    seqs = [0] * devices
    t0 = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            d = rnd.randrange(devices)
            value = 95.0 if rnd.random() < 0.01 else float(rnd.randint(0, 80))
            ev = {"tenant": "bench", "deviceId": f"dev-{d}", "seq": seqs[d], "ts": int(time.time() * 1000),
                  "type": TYPES[sent % len(TYPES)], "value": value, "region": "eu-west-1"}
            seqs[d] += 1
            p.produce(topic, orjson.dumps(ev), f"dev-{d}".encode())
            sent += 1
        p.poll(0)
        time.sleep(0.005)
    p.flush(30)


def hop_latencies(bootstrap: str, topic: str, after_ms: int, expect_alerts: bool = True) -> list[float]:
    """processedAtMs - ingestTimeMs of every alert on ``topic`` (ms) whose event was ingested
    after ``after_ms`` (past the devices' first lateness bound)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ab-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[float] = []
    idle = 0
    while idle < (10 if expect_alerts and not out else 3):
        msgs = c.consume(1000, 1.0)
        if not msgs:
            idle += 1
            continue
        idle = 0
        for m in msgs:
            if m.error() is None and m.value():
                a = orjson.loads(m.value() or b"{}")
                if a.get("ingestTimeMs") and a["ingestTimeMs"] >= after_ms:
                    out.append(a["processedAtMs"] - a["ingestTimeMs"])
    c.close()
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else -1.0


def paced(sides: dict[str, Path], bootstrap: str, redis_url: str, rates: list[int], seconds: float,
          rounds: int) -> dict[str, Any]:
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in range(rounds):
        for rate in rates:
            order = ("base", "head") if r % 2 == 0 else ("head", "base")
            for side in order:
                topic = f"bench-paced-{uuid.uuid4().hex[:6]}"
                create_topics(bootstrap, {topic: PARTITIONS, **{f"{topic}-{k}": 1 for k in
                                                                ("alerts", "late", "dlq", "audit")}})
                cfg = config(bootstrap, redis_url, topic, threshold_rules(20, TYPES))
                total = int(rate * seconds)
                env = {**os.environ, "PYTHONPATH": str(sides[side]), "PYTHONSAFEPATH": "1"}
                before = load()
                payload = {"config": orjson.dumps(cfg).decode(), "total": total, "dedup": True}
                with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "bench.evaluator.bench_evaluator", "--scenario", "run"],
                        stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=sides[side], env=env)
                    assert proc.stdin is not None
                    proc.stdin.write(orjson.dumps(payload))
                    proc.stdin.close()
                    time.sleep(6)  # the group join and assignment: not measured
                    started_ms = int(time.time() * 1000)
                    produce_paced(bootstrap, topic, rate, seconds)
                    if proc.wait(timeout=300) != 0:
                        err.seek(0)
                        raise RuntimeError(f"scenario failed: {err.read().decode()[-3000:]}")
                    out.seek(0)
                    res = dict(orjson.loads(out.read().splitlines()[-1]))
                lat = hop_latencies(bootstrap, f"{topic}-alerts", started_ms + LATENESS_MS + 1000)
                res.update(load=[before, load()], alerts_measured=len(lat),
                           hop_ms={"p50": pct(lat, 0.5), "p90": pct(lat, 0.9), "p99": pct(lat, 0.99),
                                   "max": pct(lat, 1.0)})
                rows.setdefault(f"paced {rate} ev/s", {}).setdefault(side, []).append(res)
                print(json.dumps({"round": r, "rate": rate, "side": side, "hop_ms": res["hop_ms"],
                                  "cpu_us_per_event": res["cpu_us_per_event"], "batches": res.get("batches"),
                                  "loop": res["loop_seconds"], "load": res["load"]}),
                      file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="main")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--paced", default="", help="rates (ev/s) of the paced mode, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="paced mode: seconds per run")
    args = ap.parse_args()
    args.out = args.out or HERE / ("ab_paced.json" if args.paced else "ab.json")
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    head_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    bootstrap, redis_url, stack = endpoints()
    scratch = Path(tempfile.mkdtemp(prefix="ap-ab-"))
    try:
        sides = {"base": layout(base_sources(args.base, scratch), scratch / "base"),
                 "head": layout(ROOT, scratch / "head")}
        if args.paced:
            runs = paced(sides, bootstrap, redis_url, [int(x) for x in args.paced.split(",")], args.seconds,
                         args.rounds)
            args.out.write_text(json.dumps({"base": base_rev, "head": head_rev, "mode": "paced",
                                            "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                            "runs": runs}, indent=2) + "\n")
            return 0
        topic = f"bench-ab-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, {topic: PARTITIONS})
        preload(bootstrap, topic, args.events, devices=10_000, types=TYPES)
        if not _exists(bootstrap, f"{topic}-alerts"):
            create_topics(bootstrap, {f"{topic}-{k}": 1 for k in ("alerts", "late", "dlq", "audit")})
        rules = {"a": threshold_rules(20, TYPES), "a_dedup": threshold_rules(20, TYPES),
                 "b": aggregate_rules(20)}
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for r in range(args.rounds):
            for key in args.scenarios.split(","):
                name, dedup = SCENARIOS[key]
                order = ("base", "head") if r % 2 == 0 else ("head", "base")
                for side in order:
                    cfg = config(bootstrap, redis_url, topic, rules[key])  # fresh group and Redis prefix
                    before = load()
                    res = run(sides[side], {"config": orjson.dumps(cfg).decode(), "total": args.events,
                                            "dedup": dedup})
                    res["load"] = [before, load()]
                    rows.setdefault(name, {}).setdefault(side, []).append(res)
                    print(json.dumps({"round": r, "scenario": name, "side": side, **res}), file=sys.stderr,
                          flush=True)
        summary = {
            name: {side: {"events_per_s": [x["events_per_s"] for x in xs],
                          "cpu_us_per_event": [x["cpu_us_per_event"] for x in xs],
                          "median_cpu_us_per_event": statistics.median(x["cpu_us_per_event"] for x in xs),
                          "best_events_per_s": max(x["events_per_s"] for x in xs),
                          "load": [x["load"] for x in xs]}
                   for side, xs in by_side.items()}
            for name, by_side in rows.items()
        }
        result = {"base": base_rev, "head": head_rev, "events": args.events, "rounds": args.rounds,
                  "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "summary": summary, "runs": rows}
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if stack is not None:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
