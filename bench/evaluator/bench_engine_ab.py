"""Engine A/B: CPU per event of the rule engine at this checkout against the engine of an earlier
revision, in one process, on the same stream and rule sets as bench_evaluator's (a) and (b).

The Kafka drain benchmark (bench_evaluator) measures the whole worker; its figures move with the
machine's load by more than the few per cent a change in the engine costs. This one runs only the
engine (decoded events, six partitions, the offer / take_alerts loop the worker runs), alternates
the two engines round by round so both see the same load, and reports the median CPU time per
event of each (and the minimum, the least disturbed round). The old engine is loaded from
``git show <base>:workers/rules/engine.py``: a revision before the engine was split into modules
(da29457 or earlier), whose engine.py stands alone.
Prints JSON, writes bench/evaluator/engine_ab.json and engine_ab.png.

    .venv/bin/python -m bench.evaluator.bench_engine_ab [--base 2e79dd0] [--events 150000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.rules import compile_rule
from alertpipe.workers.rules import engine as new_engine
from bench.evaluator.bench_evaluator import PARTITIONS, T0, TYPES, aggregate_rules, threshold_rules

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def old_engine(base: str) -> ModuleType:
    """The engine module of revision ``base``, loaded beside the current one."""
    src = subprocess.run(["git", "show", f"{base}:workers/rules/engine.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("alertpipe_engine_base", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    exec(compile(src, f"{base}:workers/rules/engine.py", "exec"), mod.__dict__)  # noqa: S102 - our own source
    return mod


def stream(n: int, devices: int = 10_000, seed: int = 1) -> list[tuple[int, dict[str, Any]]]:
    """bench_evaluator's preload, decoded: 1 % of values above 90, ~600 s of event time."""
    rnd = random.Random(seed)
    seqs = [0] * devices
    per_ms = max(1, n // 600_000)
    out = []
    for i in range(n):
        d = rnd.randrange(devices)
        dev = f"dev-{d}"
        value = 95.0 if rnd.random() < 0.01 else float(rnd.randint(0, 80))
        e = {"tenant": "bench", "deviceId": dev, "seq": seqs[d], "ts": T0 + i // per_ms,
             "type": TYPES[i % len(TYPES)], "value": value, "region": "eu-west-1"}
        seqs[d] += 1
        out.append((zlib.crc32(dev.encode()) % PARTITIONS, e))
    return out


def run_once(
    mod: ModuleType, rules: list[Any], events: list[tuple[int, dict[str, Any]]]
) -> tuple[float, int]:
    """(CPU seconds, alerts) of one pass: offer every event, take alerts every 500 as the worker does."""
    eng = mod.Engine(mod.EngineSettings("bench", "main", 5000), rules, clock=time.time)
    parts = [eng.partition(p) for p in range(PARTITIONS)]
    alerts = 0
    t = time.process_time()
    for i, (p, e) in enumerate(events):
        parts[p].offer(e, e["deviceId"], e["seq"], e["ts"])
        if i % 500 == 499:
            for part in parts:
                alerts += len(part.take_alerts())
    for part in parts:
        part.flush()
        alerts += len(part.take_alerts())
    return time.process_time() - t, alerts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="2e79dd0", help="the revision whose engine is the baseline")
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    events = stream(args.events)
    engines = {"base": old_engine(args.base), "head": new_engine}
    sets = {"(a) 20 threshold rules": threshold_rules(20, TYPES),
            "(b) 20 aggregate rules (1m/10s)": aggregate_rules(20)}
    results: dict[str, Any] = {"base": args.base, "events": args.events, "rounds": args.rounds, "sets": {}}
    for name, raw in sets.items():
        rules = [compile_rule(r["name"], RuleSpec.model_validate(r["spec"])) for r in raw]
        cpu: dict[str, list[float]] = {k: [] for k in engines}
        alerts: dict[str, int] = {}
        for _ in range(args.rounds):
            for label, mod in engines.items():
                s, a = run_once(mod, rules, events)
                cpu[label].append(s)
                alerts[label] = a
        us = {k: statistics.median(v) / args.events * 1e6 for k, v in cpu.items()}
        best = {k: min(v) / args.events * 1e6 for k, v in cpu.items()}  # the least disturbed round
        results["sets"][name] = {
            "cpu_us_per_event": {k: round(v, 3) for k, v in us.items()},
            "head_vs_base": round(us["head"] / us["base"], 4),
            "min_cpu_us_per_event": {k: round(v, 3) for k, v in best.items()},
            "min_head_vs_base": round(best["head"] / best["base"], 4),
            "alerts": alerts,
            "cpu_s_per_round": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        }
        print(json.dumps({name: results["sets"][name]}), file=sys.stderr, flush=True)
    (HERE / "engine_ab.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, HERE / "engine_ab.png")
    print(json.dumps(results, indent=2))
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = results["sets"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = list(sets)
    ys = list(range(len(names)))
    for off, label, color in ((0.2, "base", "tab:gray"), (-0.2, "head", "tab:blue")):
        ax.barh([y + off for y in ys], [sets[n]["cpu_us_per_event"][label] for n in names], height=0.4,
                color=color, label=f"{label} ({results['base']})" if label == "base" else label)
    for y, n in zip(ys, names, strict=True):
        ax.text(sets[n]["cpu_us_per_event"]["head"], y - 0.2, f"  ×{sets[n]['head_vs_base']:.3f}",
                va="center")
    ax.set_yticks(ys, names)
    ax.set_xlabel("engine CPU µs per event (median of rounds)")
    ax.set_title(f"rule engine A/B, {results['events']:,} events, 6 partitions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
