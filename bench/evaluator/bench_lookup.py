"""Lookup benchmark: what ``lookup('thresholds', model).max`` in rule conditions costs per event.

The evaluator's per-batch path, in one process, on a real Redis (the devstack's: env
ALERTPIPE_DEVSTACK_ENV, or one this script starts): batches of 5,000 decoded events (the worker's
default), for each ``LookupCache.prefetch`` (the cache lookups and one pipelined HGETALL round trip
for the misses) and then the engine's offers, six partitions. The stream is bench_engine_ab's
(10,000 devices, 1 % of values hot, 20 event types) with a ``model`` field: 1,000 models cached
beforehand, and a share of events (0 %, 1 %, 50 %) naming a model never read before — a miss.
Rule sets: 20 threshold rules ``value > 90.0`` (the baseline, no lookup) and the same 20 with
``value > lookup('thresholds', model).max`` (every row's max is 90: the same alerts).
Scenarios alternate round by round (the machine's load moves); reports wall and CPU µs per event,
events/s and the ratio to the baseline (medians of rounds; the minimum too, the least disturbed),
and the cache's hit rate over the distinct rows of each batch (what the counters count).
Prints JSON, writes bench/evaluator/lookup.json and lookup.png.

    .venv/bin/python -m bench.evaluator.bench_lookup [--events 150000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.evaluator.lookup_store import RedisLookupStore
from alertpipe.workers.evaluator.lookups import LookupCache
from alertpipe.workers.rules import compile_rule
from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.engine import Engine, EngineSettings
from bench.evaluator.bench_engine_ab import stream
from bench.evaluator.bench_evaluator import PARTITIONS, TYPES

HERE = Path(__file__).resolve().parent
BATCH = 5000
MODELS = 1000


def redis_url() -> tuple[str, Any]:
    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    from devstack.stack import Stack, StackEnv, new_run_dir

    if env:
        return StackEnv.load(Path(env)).check_redis(), None
    from devstack.paths import runs_dir

    stack = Stack(new_run_dir(runs_dir(), "bench-lookup"))
    return stack.redis().url, stack


def rules(lookup: bool) -> list[CompiledRule]:
    cond = "value > lookup('thresholds', model).max" if lookup else "value > 90.0"
    return [compile_rule(f"thr-{i}", RuleSpec.model_validate({
        "select": {"types": [t], "filter": 'region.startsWith("eu")'},
        "threshold": {"condition": cond},
        "annotations": {"summary": "{{ value }} on {{ deviceId }}"},
    })) for i, t in enumerate(TYPES)]  # fmt: skip


def events(n: int, miss: float, seed: int) -> list[tuple[int, dict[str, Any]]]:
    """The stream with ``model``: a cached one, or (share ``miss``) one never read before."""
    rnd = random.Random(seed)
    out = stream(n)
    for i, (_p, e) in enumerate(out):
        e["model"] = f"new-{seed}-{i}" if rnd.random() < miss else f"m{rnd.randrange(MODELS)}"
    return out


def run_once(store: RedisLookupStore, rule_set: list[CompiledRule], evs: list[tuple[int, dict[str, Any]]],
             ) -> dict[str, Any]:
    cache = LookupCache(store, ttl_s=3600, max_entries=1_000_000)
    cache.prefetch({r.name: r for r in rule_set},  # the 1,000 models are cached before the clock starts
                   [{"type": t, "model": f"m{m}"} for m in range(MODELS) for t in TYPES[:1]])
    cache.hits = cache.misses = 0
    engine = Engine(EngineSettings("bench", "main", 5000), rule_set, clock=time.time, lookups=cache)
    parts = [engine.partition(p) for p in range(PARTITIONS)]
    by_name = engine.rules
    alerts = trips = 0
    fetch_s = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(evs), BATCH):
        batch = evs[start:start + BATCH]
        t = time.perf_counter()
        if cache.prefetch(by_name, [e for _p, e in batch]):
            trips += 1
        fetch_s += time.perf_counter() - t
        for p, e in batch:
            parts[p].offer(e, e["deviceId"], e["seq"], e["ts"])
        for part in parts:
            alerts += len(part.take_alerts())
    for part in parts:
        part.flush()
        alerts += len(part.take_alerts())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "alerts": alerts, "round_trips": trips, "prefetch_s": fetch_s,
            "hit_rate": round(cache.hit_rate(), 4), "unfetched": cache.unfetched}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    url, stack = redis_url()
    try:
        client = redis.Redis.from_url(url)
        store = RedisLookupStore(client, f"bench-lookup-{os.getpid()}")
        scenarios = {"no lookup": (False, 0.0), "lookup, 0 % misses": (True, 0.0),
                     "lookup, 1 % misses": (True, 0.01), "lookup, 50 % misses": (True, 0.5)}
        streams = {miss: [events(args.events, miss, seed=r) for r in range(args.rounds)]
                   for miss in sorted({m for _l, m in scenarios.values()})}
        keys = {e["model"] for ss in streams.values() for s in ss for _p, e in s}
        store.put("thresholds", ((k, {"max": 90.0}) for k in sorted(keys)))
        results: dict[str, Any] = {"events": args.events, "rounds": args.rounds, "batch": BATCH,
                                   "rules": 20, "scenarios": {}}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in scenarios}
        compiled = {False: rules(False), True: rules(True)}
        for r in range(args.rounds):  # round by round, so every scenario sees the machine's same load
            for name, (lookup, miss) in scenarios.items():
                runs[name].append(run_once(store, compiled[lookup], streams[miss][r]))
        n = args.events
        for name, (_lookup, miss) in scenarios.items():
            rs = runs[name]
            wall_us = statistics.median(x["wall_s"] for x in rs) / n * 1e6
            results["scenarios"][name] = {
                "miss_share": miss, "wall_us_per_event": round(wall_us, 3),
                "min_wall_us_per_event": round(min(x["wall_s"] for x in rs) / n * 1e6, 3),
                "cpu_us_per_event": round(statistics.median(x["cpu_s"] for x in rs) / n * 1e6, 3),
                "events_per_s": round(1e6 / wall_us),
                "prefetch_us_per_event": round(statistics.median(x["prefetch_s"] for x in rs) / n * 1e6, 3),
                "round_trips_per_run": rs[0]["round_trips"], "hit_rate_distinct_rows": rs[0]["hit_rate"],
                "alerts": [x["alerts"] for x in rs], "unfetched": rs[0]["unfetched"],
            }
            print(json.dumps({name: results["scenarios"][name]}), file=sys.stderr, flush=True)
        base = results["scenarios"]["no lookup"]["wall_us_per_event"]
        base_min = results["scenarios"]["no lookup"]["min_wall_us_per_event"]
        for s in results["scenarios"].values():
            s["wall_vs_no_lookup"] = round(s["wall_us_per_event"] / base, 3)
            s["min_wall_vs_no_lookup"] = round(s["min_wall_us_per_event"] / base_min, 3)
        store.delete("thresholds", keys)
    finally:
        if stack is not None:
            stack.stop()
    (HERE / "lookup.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, HERE / "lookup.png")
    print(json.dumps(results, indent=2))
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results["scenarios"]
    names = list(sc)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ys = list(range(len(names)))[::-1]
    engine = [sc[n]["wall_us_per_event"] - sc[n]["prefetch_us_per_event"] for n in names]
    prefetch = [sc[n]["prefetch_us_per_event"] for n in names]
    ax.barh(ys, engine, color="tab:blue", label="engine")
    ax.barh(ys, prefetch, left=engine, color="tab:orange", label="prefetch (cache + Redis round trip)")
    for y, n in zip(ys, names, strict=True):
        s = sc[n]
        ax.text(s["wall_us_per_event"], y, f"  {s['wall_us_per_event']:.2f} µs, {s['events_per_s']:,} ev/s,"
                f" ×{s['wall_vs_no_lookup']:.2f}", va="center", fontsize=8)
    ax.set_yticks(ys, names)
    ax.set_xlim(0, max(sc[n]["wall_us_per_event"] for n in names) * 1.7)
    ax.set_xlabel("wall µs per event (median of rounds)")
    ax.set_title(f"lookup() cost: 20 threshold rules, {results['events']:,} events, batches of {BATCH}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
