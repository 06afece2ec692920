"""The engine against the reference evaluator (tests/reference) on one large seeded stream: how
many transitions each rule gives in the reference, in the engine at HEAD, and in the engine of a
base revision, and how long each takes. The differential property test checks many small streams;
this is the scale check the aggregate-window bug (issue 16) was found with.

Per-device rules only (the base engine runs one partition per upstream, without the repartition
stage). The stream: 1,000 devices on 6 partitions, one reading every ~2 s per device for ~5 minutes,
1 in 20 delayed past the lateness bound, 1 in 10 duplicated, disorder within the bound, gaps.
Prints JSON, writes bench/evaluator/reference.json.

    .venv/bin/python -m bench.evaluator.bench_reference [--base 2e79dd0] [--devices 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.rules import CompiledRule, compile_rule
from alertpipe.workers.rules import engine as head_engine
from bench.evaluator.bench_engine_ab import old_engine
from tests.reference.evaluator import evaluate, transition
from tests.reference.pipeline import END

HERE = Path(__file__).resolve().parent
T0 = 1_767_225_600_000
LATENESS = 5000
PARTITIONS = 6

RULES = {
    "threshold for 10s": {"threshold": {"condition": "value > 80"}, "for": "10s"},
    "tumbling avg 1m": {"aggregate": {"fn": "avg", "field": "value", "window": "1m",
                                      "condition": "value > 55.0"}},
    "sliding avg 30s/10s": {"aggregate": {"fn": "avg", "field": "value", "window": "30s", "every": "10s",
                                          "condition": "value > 60.0"}},
    "sliding p90 1m/10s": {"aggregate": {"fn": "p90", "field": "value", "window": "1m", "every": "10s",
                                         "condition": "value > 85.0"}},
    "sliding count 20s/5s < 3": {"aggregate": {"fn": "count", "window": "20s", "every": "5s",
                                               "condition": "value < 3"}},
    "absence 15s": {"absence": {"for": "15s"}},
}


def stream(devices: int, seconds: int, seed: int = 7) -> list[tuple[int, dict[str, Any]]]:
    rnd = random.Random(seed)
    sent: list[tuple[int, int, int, dict[str, Any]]] = []
    for d in range(devices):
        dev = f"dev-{d}"
        part = zlib.crc32(dev.encode()) % PARTITIONS
        t = rnd.randint(0, 3000)
        level = rnd.uniform(20, 70)
        seq = 0
        while t < seconds * 1000:
            t += rnd.choice([500, 1000, 2000, 2000, 3000, 8000, 20000])
            level = min(100.0, max(0.0, level + rnd.uniform(-8, 8)))
            seq += 1
            if rnd.random() < 0.03:
                continue  # a gap
            e = {"tenant": "bench", "deviceId": dev, "seq": seq, "ts": T0 + t, "type": "cpu",
                 "value": round(level * 2) / 2}
            late = rnd.random() < 0.05
            delay = rnd.randint(LATENESS, 3 * LATENESS) if late else rnd.randint(0, LATENESS - 1)
            sent.append((t + delay, len(sent), part, e))
            if rnd.random() < 0.1:
                sent.append((t + delay + rnd.randint(0, 2 * LATENESS), len(sent), part, dict(e)))
    sent.sort()
    return [(p, e) for _a, _i, p, e in sent]


def run_engine(mod: ModuleType, rules: list[CompiledRule], arrivals: list[tuple[int, dict[str, Any]]]
               ) -> list[dict[str, Any]]:
    eng = mod.Engine(mod.EngineSettings("bench", "main", LATENESS), rules, clock=lambda: 0.0)
    out: list[dict[str, Any]] = []
    for p, e in arrivals:
        eng.partition(p).offer(e, e["deviceId"], e["seq"], e["ts"])
    for p in range(PARTITIONS):
        part = eng.partition(p)
        part.advance_to(END)
        out += part.take_alerts()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="2e79dd0")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=300)
    args = ap.parse_args()
    arrivals = stream(args.devices, args.seconds)
    rules = [compile_rule(f"r{i}", RuleSpec.model_validate(spec)) for i, spec in enumerate(RULES.values())]
    names = dict(zip((r.name for r in rules), RULES, strict=True))
    kinds = {r.name: r.kind for r in rules}
    t = time.perf_counter()
    ref = evaluate(rules, arrivals, lateness_ms=LATENESS, final_wm=END)
    ref_s = time.perf_counter() - t
    results: dict[str, Any] = {"events": len(arrivals), "devices": args.devices, "base": args.base,
                               "reference_seconds": round(ref_s, 2), "rules": {}}
    engines = {"head": head_engine, "base": old_engine(args.base)}
    got = {}
    for label, mod in engines.items():
        t = time.perf_counter()
        alerts = run_engine(mod, rules, arrivals)
        results[f"{label}_seconds"] = round(time.perf_counter() - t, 2)
        got[label] = sorted(transition(a, kinds[a["rule"]]) for a in alerts)
    for r in rules:
        want = [x for x in ref if x.rule == r.name]
        row: dict[str, Any] = {"reference": len(want)}
        for label in engines:
            mine = [x for x in got[label] if x.rule == r.name]
            row[label] = len(mine)
            row[f"{label}_equal"] = mine == want
        results["rules"][names[r.name]] = row
    (HERE / "reference.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if all(row["head_equal"] for row in results["rules"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
