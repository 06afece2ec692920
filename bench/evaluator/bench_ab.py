"""Evaluator A/B: the whole worker (bench_evaluator's drain scenarios) at a base revision and at
this checkout, in one run on one topic, rounds alternating so both see the same machine load.

The base's sources (``git archive``) and this checkout's (the working tree, uncommitted changes
included) are copied side by side into a scratch folder, each with the import layout the wheel
gives (``alertpipe.workers``, ``alertpipe.operator``); every scenario runs bench_evaluator's
``--scenario run`` in a fresh process with one of them first on ``sys.path``. The load average is
recorded next to every figure (the machine is shared). Prints JSON, writes bench/evaluator/ab.json.

    .venv/bin/python -m bench.evaluator.bench_ab [--base main] [--events 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="main")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", type=Path, default=HERE / "ab.json")
    args = ap.parse_args()
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    head_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    bootstrap, redis_url, stack = endpoints()
    scratch = Path(tempfile.mkdtemp(prefix="ap-ab-"))
    try:
        sides = {"base": layout(base_sources(args.base, scratch), scratch / "base"),
                 "head": layout(ROOT, scratch / "head")}
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
