"""Evaluator benchmark: drain rate and CPU of one evaluator over a preloaded 6-partition topic.

Real broker and Redis on this machine (the devstack's: env ALERTPIPE_DEVSTACK_ENV, or a stack this
script starts). Events are preloaded, 1 % of them firing; each scenario runs in a fresh process
(``--scenario``) so CPU time and RSS are its own. Figures: (a) 20 threshold rules, (b) 20 windowed
aggregate rules with dedup, (c) 10 / 100 / 1,000 rules of which only 10 match the stream's types,
(d) memory at 100k and 1M active group keys, and the bare confluent-kafka consume rate of the same
topic as the ratio to beat. Prints JSON, writes bench/evaluator/results.json and evaluator.png.

    .venv/bin/python -m bench.evaluator.bench_evaluator [--events 600000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARTITIONS = 6
T0 = 1_767_225_600_000
TYPES = [f"t{i}" for i in range(20)]
ALL_PARTS = "drain,scaling,memory,checkpoint"


# --- the stack and the data ------------------------------------------------------------------------


def endpoints() -> tuple[str, str, Any]:
    env = os.environ.get("ALERTPIPE_DEVSTACK_ENV")
    from devstack.stack import Stack, StackEnv, new_run_dir

    if env:
        se = StackEnv.load(Path(env))
        return se.check_kafka(), se.check_redis(), None
    from devstack.paths import runs_dir

    stack = Stack(new_run_dir(runs_dir(), "bench"))
    return stack.kafka().bootstrap, stack.redis().url, stack


def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(n, p, 1) for n, p in names.items()]).values():
        f.result(timeout=30)


def preload(bootstrap: str, topic: str, n: int, devices: int, types: list[str], seed: int = 1) -> float:
    """n events over ``devices`` devices, 1 % with value > 90; returns seconds spent producing."""
    rnd = random.Random(seed)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    seqs = [0] * devices
    t = time.perf_counter()
    per_ms = max(1, n // 600_000)  # ~600 s of event time at most
    for i in range(n):
        d = i % devices if devices >= n else rnd.randrange(devices)
        dev = f"dev-{d}"
        value = 95.0 if rnd.random() < 0.01 else float(rnd.randint(0, 80))
        ev = {
            "tenant": "bench",
            "deviceId": dev,
            "seq": seqs[d],
            "ts": T0 + i // per_ms,
            "type": types[i % len(types)],
            "value": value,
            "region": "eu-west-1",
        }
        seqs[d] += 1
        while True:
            try:
                p.produce(topic, orjson.dumps(ev), dev.encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 20_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    return time.perf_counter() - t


# --- rule sets ------------------------------------------------------------------------------------


def threshold_rules(n: int, matching_types: list[str], other_prefix: str = "other") -> list[dict[str, Any]]:
    """n threshold rules: the first len(matching_types) select the stream's types, the rest never sent."""
    rules = []
    for i in range(n):
        typ = matching_types[i] if i < len(matching_types) else f"{other_prefix}{i}"
        rules.append(
            {
                "name": f"thr-{i}",
                "spec": {
                    "select": {"types": [typ], "filter": 'region.startsWith("eu")'},
                    "threshold": {"condition": "value > 90.0"},
                    "annotations": {"summary": "{{ value }} on {{ deviceId }}"},
                },
            }
        )
    return rules


def same_type_threshold_rules(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"thr-{i}",
            "spec": {"select": {"types": ["t0"]}, "threshold": {"condition": f"value > {90.0 + i * 0.001}"}},
        }
        for i in range(n)
    ]


def aggregate_rules(n: int) -> list[dict[str, Any]]:
    fns = ["avg", "max", "count", "p95", "sum"]
    out = []
    for i in range(n):
        fn = fns[i % len(fns)]
        spec: dict[str, Any] = {
            "fn": fn,
            "window": "1m",
            "every": "10s",
            "condition": "value > 1000000.0" if fn in ("count", "sum") else "value > 90.0",
        }
        if fn != "count":
            spec["field"] = "value"
        out.append(
            {"name": f"agg-{i}", "spec": {"select": {"types": [TYPES[i % len(TYPES)]]}, "aggregate": spec}}
        )
    return out


def config(bootstrap: str, redis_url: str, topic: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    name = topic
    return {
        "tenant": "bench",
        "pipeline": "bench",
        "kafka": {
            "bootstrapServers": bootstrap,
            "topics": {
                "events": topic,
                "alerts": f"{name}-alerts",
                "late": f"{name}-late",
                "deadLetter": f"{name}-dlq",
                "audit": f"{name}-audit",
            },
        },
        "redis": {"url": redis_url, "keyPrefix": f"bench:{uuid.uuid4().hex[:8]}"},
        "idleTimeout": "1h",
        "rules": rules,
    }


# --- one scenario, in its own process ---------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sched_ns() -> tuple[int, int]:
    """(on-CPU, waiting-for-a-CPU) nanoseconds summed over this process's threads (schedstat)."""
    run = wait = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that just ended
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


class GcWatch:
    """Every garbage collection of this process while installed: count, seconds, longest pause."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._t = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        elif self._t:
            self.pauses.append(time.perf_counter() - self._t)

    def summary(self) -> dict[str, Any]:
        gc.callbacks.remove(self._cb)
        return {"collections": len(self.pauses), "seconds": round(sum(self.pauses), 3),
                "max_pause_ms": round(max(self.pauses, default=0.0) * 1000, 1)}


def gc_as_shipped() -> str:
    """What this tree's ``alertpipe evaluator`` does to the collector before its loop. (The module
    alone is no sign: an A/B's base tree finds a newer checkout's module through the editable
    install; its CLI does not call it.)"""
    from alertpipe.workers.evaluator import cli

    apply = getattr(cli, "apply_gc_policy", None)
    if apply is None:  # a base tree from before the policy: Python's defaults
        return "python defaults"
    return "policy" if apply() else "python defaults"


def run_scenario(cfg_json: str, total: int, dedup: bool, profile: str | None) -> dict[str, Any]:
    from alertpipe.workers.config import PipelineConfig, StaticConfigSource
    from alertpipe.workers.evaluator.metrics import LOOP_PHASES
    from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions

    cfg = PipelineConfig.model_validate(orjson.loads(cfg_json)).with_revision()
    ev = Evaluator(
        StaticConfigSource(cfg),
        options=EvaluatorOptions(
            batch_size=5000, checkpoint_interval=2.0, group_id=f"bench-{uuid.uuid4().hex[:8]}", dedup=dedup
        ),
    )
    reg = ev.metrics.registry
    stop = threading.Event()
    marks: dict[str, float] = {}
    loop: dict[str, float] = {}

    def consumed() -> float:
        return reg.get_sample_value("alertpipe_evaluator_events_consumed_total", {"tenant": "bench"}) or 0.0

    def accounted() -> float:
        """Records evaluated, deduped, late or malformed (each consumed record is one of them)."""
        return sum(
            reg.get_sample_value(name, labels) or 0.0
            for name, labels in (
                ("alertpipe_evaluator_events_evaluated_total", {"tenant": "bench"}),
                ("alertpipe_evaluator_events_deduped_total", {"tenant": "bench", "by": "redis"}),
                ("alertpipe_evaluator_events_deduped_total", {"tenant": "bench", "by": "engine"}),
                ("alertpipe_evaluator_events_late_total", {"tenant": "bench"}),
                ("alertpipe_evaluator_events_malformed_total", {"tenant": "bench"}),
            )
        )

    def loop_now() -> dict[str, float]:
        return {ph: reg.get_sample_value("alertpipe_evaluator_loop_seconds_total", {"phase": ph}) or 0.0
                for ph in LOOP_PHASES}

    def watch() -> None:
        while not stop.is_set():
            c = consumed()
            if "t_first" not in marks and c > 0:
                run_ns, wait_ns = sched_ns()
                marks.update(t_first=time.perf_counter(), cpu_first=time.process_time(), c_first=c,
                             run_first=run_ns, wait_first=wait_ns)
                loop.update({k: -v for k, v in loop_now().items()})
            if c >= total:
                # consumed counts at decode: wait for the batches still in flight to be evaluated
                for _ in range(1000):
                    if accounted() >= c:
                        break
                    time.sleep(0.002)
                run_ns, wait_ns = sched_ns()
                marks.update(t_end=time.perf_counter(), cpu_end=time.process_time(), run_end=run_ns,
                             wait_end=wait_ns)
                for k, v in loop_now().items():
                    loop[k] = round(loop[k] + v, 3)
                try:
                    marks["groups"] = sum(p.group_count() for p in list(ev.engine.partitions.values()))
                except RuntimeError:  # the loop changed a dict meanwhile: a gauge, not worth a lock
                    marks["groups"] = -1
                stop.set()
            time.sleep(0.02)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    gc_mode = gc_as_shipped()
    gcw = GcWatch()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    ev.run(stop)
    if profiler is not None:
        profiler.stop()
        Path(str(profile)).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    n = total - marks["c_first"]
    secs = marks["t_end"] - marks["t_first"]
    cpu = marks["cpu_end"] - marks["cpu_first"]
    groups = int(marks["groups"])
    ckpt_n = reg.get_sample_value("alertpipe_evaluator_checkpoint_seconds_count") or 0
    ckpt_s = reg.get_sample_value("alertpipe_evaluator_checkpoint_seconds_sum") or 0
    alerts = sum(
        s.value
        for m in reg.collect()
        if m.name == "alertpipe_evaluator_alerts"
        for s in m.samples
        if s.name.endswith("_total")
    )
    return {
        "events": int(n),
        "seconds": round(secs, 3),
        "events_per_s": round(n / secs),
        "cpu_seconds": round(cpu, 3),
        "cpu_utilisation": round(cpu / secs, 2),
        "cpu_us_per_event": round(cpu / n * 1e6, 2),
        "rss_mb": round(rss_mb(), 1),
        "group_keys": groups,
        "alerts": int(alerts),
        "checkpoint_mean_s": round(ckpt_s / ckpt_n, 4) if ckpt_n else None,
        "batches": ev.batches,
        # seconds all threads waited for a CPU (run queue): what the machine's load takes away
        "runqueue_wait_s": round((marks["wait_end"] - marks["wait_first"]) / 1e9, 3),
        "loop_seconds": loop,
        "gc": {"mode": gc_mode, **gcw.summary()},
    }


def checkpoint_cost(keys: int, touched: int) -> dict[str, Any]:
    """Engine only (no Kafka, no Redis): a full checkpoint of a partition holding ``keys`` group keys
    (one device each), then a delta after ``touched`` more events, then restoring both."""
    from alertpipe.workers.config import RuleSpec
    from alertpipe.workers.rules import compile_rule
    from alertpipe.workers.rules.engine import Engine, EngineSettings

    spec = {"select": {"types": ["t0"]},
            "aggregate": {"fn": "max", "field": "value", "window": "1h", "condition": "value > 1000.0"}}
    rule = compile_rule("per-device-max", RuleSpec.model_validate(spec))

    def engine() -> Any:
        return Engine(EngineSettings("bench", "bench", 5000), [rule]).partition(0)

    part = engine()
    for i in range(keys):
        part.offer({"deviceId": f"dev-{i}", "type": "t0", "value": 1.0}, f"dev-{i}", 0, T0 + i * 3)
    t = time.process_time()
    full, base = part.checkpoint(offset=keys)
    full_s = time.process_time() - t
    part.saved()
    rnd = random.Random(2)
    for j in range(touched):
        d = rnd.randrange(keys)
        part.offer({"deviceId": f"dev-{d}", "type": "t0", "value": 2.0}, f"dev-{d}", 1, T0 + keys * 3 + j)
    t = time.process_time()
    is_full, delta = part.checkpoint(offset=keys + touched)
    delta_s = time.process_time() - t
    t = time.process_time()
    engine().restore(base, [delta])
    restore_s = time.process_time() - t
    assert full and not is_full
    return {"group_keys": part.group_count(), "touched_events": touched,
            "full_cpu_s": round(full_s, 3), "full_mb": round(len(base) / 2**20, 1),
            "delta_cpu_s": round(delta_s, 4), "delta_kb": round(len(delta) / 1024, 1),
            "restore_full_plus_delta_cpu_s": round(restore_s, 3), "rss_mb": round(rss_mb(), 1)}


def bare_consume(bootstrap: str, topic: str, total: int) -> dict[str, Any]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            "queued.min.messages": 200_000,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    n = 0
    t_first = cpu_first = 0.0
    while n < total:
        msgs = c.consume(5000, 1.0)
        if msgs and not t_first:
            t_first, cpu_first = time.perf_counter(), time.process_time()
            n0 = len(msgs)
        for m in msgs:
            m.value()
        n += len(msgs)
    secs = time.perf_counter() - t_first
    cpu = time.process_time() - cpu_first
    c.close()
    return {
        "events": n - n0,
        "seconds": round(secs, 3),
        "events_per_s": round((n - n0) / secs),
        "cpu_utilisation": round(cpu / secs, 2),
    }


def in_subprocess(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.evaluator.bench_evaluator", "--scenario", kind],
        input=orjson.dumps(payload),
        capture_output=True,
        cwd=ROOT,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"scenario {kind} failed: {out.stderr.decode()[-3000:]}")
    return dict(orjson.loads(out.stdout.splitlines()[-1]))


# --- the whole run --------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    rates = results["drain"]
    names = list(rates)
    ys = list(range(len(names)))
    axes[0].barh([y + 0.2 for y in ys], [rates[k]["events_per_s"] for k in names], height=0.4,
                 color="tab:blue", label="measured (wall, machine load in notes)")
    # what the same CPU per event gives when the process is not kept waiting for a core
    bound = [1e6 / rates[k]["cpu_us_per_event"] if rates[k].get("cpu_us_per_event") else 0 for k in names]
    axes[0].barh([y - 0.2 for y in ys], bound, height=0.4, color="tab:cyan",
                 label="CPU-bound (1e6 / CPU µs per event)")
    axes[0].set_yticks(ys, names)
    axes[0].axvline(150_000, color="tab:red", ls="--", label="target (a) 150k")
    axes[0].axvline(80_000, color="tab:orange", ls="--", label="target (b) 80k")
    axes[0].set_xlabel("thousand events/s (one evaluator process)")
    axes[0].xaxis.set_major_formatter(lambda v, _: f"{v / 1000:.0f}")
    axes[0].set_title("drain rate")
    axes[0].legend(fontsize=8)
    sc = results["rule_scaling"]
    xs = sorted(int(k) for k in sc)
    axes[1].plot(xs, [sc[str(x)]["cpu_us_per_event"] for x in xs], marker="o")
    axes[1].set_xscale("log")
    axes[1].set_ylim(0, max(sc[str(x)]["cpu_us_per_event"] for x in xs) * 1.3)
    axes[1].set_xlabel("rules loaded (10 match the stream)")
    axes[1].set_ylabel("CPU µs per event")
    axes[1].set_title("cost vs rules that cannot match")
    mem = results["memory"]
    ks = sorted(int(k) for k in mem)
    axes[2].bar([f"{k // 1000}k keys" for k in ks], [mem[str(k)]["rss_mb"] for k in ks], color="tab:green")
    axes[2].axhline(1024, color="tab:red", ls="--", label="1 GiB")
    axes[2].set_ylabel("RSS MiB")
    axes[2].set_title("memory at active group keys")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--quick", action="store_true", help="fewer events, skip 1M keys")
    ap.add_argument("--profile", default=None, help="write a pyinstrument profile of scenario (a) here")
    ap.add_argument("--only", default=ALL_PARTS, help="comma-separated parts to run")
    ap.add_argument("--keys", default="100000,1000000", help="group-key counts of the memory part")
    ap.add_argument("--plot-only", action="store_true", help="redraw evaluator.png from results.json")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((HERE / "results.json").read_text()), HERE / "evaluator.png")
        return 0
    if args.scenario:
        payload = orjson.loads(sys.stdin.buffer.read())
        if args.scenario == "checkpoint":
            res = checkpoint_cost(payload["keys"], payload["touched"])
        elif args.scenario == "bare":
            res = bare_consume(payload["bootstrap"], payload["topic"], payload["total"])
        else:
            res = run_scenario(payload["config"], payload["total"], payload["dedup"], payload.get("profile"))
        print(orjson.dumps(res).decode())
        return 0

    bootstrap, redis_url, stack = endpoints()
    try:
        n = 150_000 if args.quick else args.events
        run = uuid.uuid4().hex[:6]
        main_topic = f"bench-ev-{run}"
        create_topics(bootstrap, {main_topic: PARTITIONS})
        load_s = preload(bootstrap, main_topic, n, devices=10_000, types=TYPES)
        results: dict[str, Any] = {
            "events": n,
            "partitions": PARTITIONS,
            "preload_seconds": round(load_s, 1),
            "machine_cpus": os.cpu_count(),
            "drain": {},
            "rule_scaling": {},
            "memory": {},
            "checkpoint": {},
        }
        previous = HERE / "results.json"
        if args.only != ALL_PARTS and previous.exists():
            # a partial run updates the parts it measures and keeps the others
            old = json.loads(previous.read_text())
            for part in ("drain", "rule_scaling", "memory", "checkpoint"):
                results[part] = old.get(part, {})

        def save() -> None:
            (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")

        only = set(args.only.split(","))

        def scenario(
            rules: list[dict[str, Any]],
            dedup: bool,
            topic: str = main_topic,
            total: int = n,
            profile: str | None = None,
        ) -> dict[str, Any]:
            cfg = config(bootstrap, redis_url, topic, rules)
            create_topics(
                bootstrap, {f"{topic}-{k}": 1 for k in ("alerts", "late", "dlq", "audit")}
            ) if not _exists(bootstrap, f"{topic}-alerts") else None
            res = in_subprocess(
                "run",
                {"config": orjson.dumps(cfg).decode(), "total": total, "dedup": dedup, "profile": profile},
            )
            print(json.dumps(res), file=sys.stderr, flush=True)
            return res

        if "drain" in only:
            results["drain"]["bare confluent-kafka consume"] = in_subprocess(
                "bare", {"bootstrap": bootstrap, "topic": main_topic, "total": n}
            )
            results["drain"]["(a) 20 threshold rules, 20 types, no dedup"] = scenario(
                threshold_rules(20, TYPES), dedup=False, profile=args.profile
            )
            results["drain"]["(a) 20 threshold rules, 20 types, dedup"] = scenario(
                threshold_rules(20, TYPES), True
            )
            results["drain"]["(a') 20 threshold rules on one type, dedup"] = scenario(
                same_type_threshold_rules(20), True
            )
            results["drain"]["(b) 20 aggregate rules (1m/10s), dedup"] = scenario(aggregate_rules(20), True)
            save()
        if "scaling" in only:
            for count in (10, 100, 1000):
                results["rule_scaling"][str(count)] = scenario(threshold_rules(count, TYPES[:10]), True)
                save()
        sizes = [int(k) for k in args.keys.split(",")] if "memory" in only else []
        for keys in sizes:
            topic = f"bench-keys-{keys}-{run}"
            create_topics(bootstrap, {topic: PARTITIONS})
            preload(bootstrap, topic, keys, devices=keys, types=["t0"])
            rules = [
                {
                    "name": "per-device-max",
                    "spec": {
                        "select": {"types": ["t0"]},
                        "aggregate": {
                            "fn": "max",
                            "field": "value",
                            "window": "1h",
                            "condition": "value > 1000.0",
                        },
                    },
                }
            ]
            results["memory"][str(keys)] = scenario(rules, True, topic=topic, total=keys)
            save()
        if "checkpoint" in only:
            for keys in [int(k) for k in args.keys.split(",")]:
                res = in_subprocess("checkpoint", {"keys": keys, "touched": 10_000})
                print(json.dumps(res), file=sys.stderr, flush=True)
                results["checkpoint"][str(keys)] = res
                save()
        print(json.dumps(results, indent=2))
        save()
        plot(results, HERE / "evaluator.png")
    finally:
        if stack is not None:
            stack.stop()
    return 0


def _exists(bootstrap: str, topic: str) -> bool:
    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


if __name__ == "__main__":
    raise SystemExit(main())
