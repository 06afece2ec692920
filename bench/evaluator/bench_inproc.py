"""The evaluator's per-batch work in one process, without Kafka or Redis: real confluent_kafka
``Message`` objects of bench_evaluator's stream (6 partitions, 10k devices, 1 % firing) fed to
``Evaluator.process`` (decode, dedup keys, the engine, outputs) and a checkpoint cut every
``--checkpoint-every`` events. The producer discards, the dedup store answers "new" for every key.

What it is for: profiling and A/B of the evaluator's own CPU per event, which the Kafka drain
(bench_evaluator, bench_ab) shows only through librdkafka's threads and the machine's run queue.
``--profile cprofile|pyinstrument`` prints a profile of one pass. ``--gc ab`` (the default) runs
every round twice, alternating, with Python's collector defaults and with the workers' policy
(alertpipe.workers.gc_policy, what ``alertpipe evaluator`` applies), and reports both. Prints JSON.

    .venv/bin/python -m bench.evaluator.bench_inproc [--events 150000] [--rounds 3] [--sets a,b]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from confluent_kafka import Message, TopicPartition

from bench.evaluator.bench_engine_ab import stream
from bench.evaluator.bench_evaluator import PARTITIONS, TYPES, aggregate_rules, threshold_rules

TOPIC = "bench-inproc"
NEW = ord("0")


class _Producer:
    def produce(self, *_: Any, **__: Any) -> None:
        return None

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


class _Consumer:
    def assign(self, _: Any) -> None:
        return None

    def commit(self, **_: Any) -> None:
        return None

    def close(self) -> None:
        return None


class _State:
    def check(self, keys: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
              ttl_s: int) -> bytes:
        return bytes([NEW]) * len(keys)

    def load_chain(self, partition: int) -> None:
        return None

    def save_chain(self, blobs: Iterable[tuple[int, bool, bytes]],
                   gaps: Sequence[dict[str, Any]] = ()) -> None:
        return None


def messages(n: int) -> list[Any]:
    """bench_evaluator's preload as consumed records, in consume order (partitions interleaved)."""
    offsets = [0] * PARTITIONS
    now = int(time.time() * 1000)
    out = []
    for p, e in stream(n):
        dev = e["deviceId"].encode()
        out.append(Message(topic=TOPIC, partition=p, offset=offsets[p], key=dev, value=orjson.dumps(e),
                           timestamp=(1, now)))
        offsets[p] += 1
    return out


def evaluator(rules: list[dict[str, Any]], dedup: bool) -> Any:
    from alertpipe.workers.config import PipelineConfig, StaticConfigSource
    from alertpipe.workers.evaluator.clients import EvaluatorClients
    from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions

    cfg = PipelineConfig.model_validate({
        "tenant": "bench", "pipeline": "bench", "idleTimeout": "1h",
        "kafka": {"bootstrapServers": "127.0.0.1:1", "topics": {
            "events": TOPIC, "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"}},
        "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "bench"},
        "rules": rules,
    }).with_revision()  # fmt: skip
    ev = Evaluator(StaticConfigSource(cfg), options=EvaluatorOptions(dedup=dedup),
                   clients=EvaluatorClients(_Consumer(), _Producer(), _State()))
    ev._on_assign(ev.consumer, [TopicPartition(TOPIC, p) for p in range(PARTITIONS)])  # noqa: SLF001
    return ev


def run_once(rules: list[dict[str, Any]], dedup: bool, msgs: list[Any], batch: int,
             checkpoint_every: int) -> tuple[float, int]:
    """(CPU seconds, alerts produced) of one pass over ``msgs``."""
    ev = evaluator(rules, dedup)
    alerts = ev.metrics.alerts
    t = time.process_time()
    since = 0
    for i in range(0, len(msgs), batch):
        ev.process(msgs[i:i + batch])
        since += batch
        if since >= checkpoint_every:
            since = 0
            for p, part in ev.engine.partitions.items():
                part.checkpoint(offset=ev.positions[p])
                part.saved()
    cpu = time.process_time() - t
    n = sum(s.value for m in alerts.collect() for s in m.samples if s.name.endswith("_total"))
    ev._pool.shutdown()  # noqa: SLF001
    ev._writes.shutdown()  # noqa: SLF001
    return cpu, int(n)


SETS: dict[str, tuple[str, Callable[[], list[dict[str, Any]]], bool]] = {
    "a": ("(a) 20 threshold rules, dedup", lambda: threshold_rules(20, TYPES), True),
    "a_nodedup": ("(a) 20 threshold rules, no dedup", lambda: threshold_rules(20, TYPES), False),
    "b": ("(b) 20 aggregate rules (1m/10s), dedup", lambda: aggregate_rules(20), True),
}


def gc_mode(mode: str) -> None:
    """Python's collector defaults, or the workers' policy (frozen start-up objects, thresholds)."""
    from alertpipe.workers.gc_policy import apply

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gc.collect()
    if mode == "policy":
        apply()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--checkpoint-every", type=int, default=130_000)
    ap.add_argument("--sets", default="a,b")
    ap.add_argument("--profile", choices=("cprofile", "pyinstrument"), default=None)
    ap.add_argument("--gc", choices=("ab", "python", "policy"), default="ab",
                    help="collector settings: Python's defaults, the workers' policy, or both alternating")
    args = ap.parse_args()
    msgs = messages(args.events)
    results: dict[str, Any] = {"events": args.events, "rounds": args.rounds}
    for key in args.sets.split(","):
        name, rules_of, dedup = SETS[key]
        rules = rules_of()
        if args.profile == "cprofile":
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            run_once(rules, dedup, msgs, args.batch, args.checkpoint_every)
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)
            continue
        if args.profile == "pyinstrument":
            from pyinstrument import Profiler

            prof2 = Profiler(interval=0.0005)
            prof2.start()
            run_once(rules, dedup, msgs, args.batch, args.checkpoint_every)
            prof2.stop()
            print(prof2.output_text(unicode=False, color=False), file=sys.stderr)
            continue
        modes = ("python", "policy") if args.gc == "ab" else (args.gc,)
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        alerts = 0
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                gc_mode(mode)
                s, alerts = run_once(rules, dedup, msgs, args.batch, args.checkpoint_every)
                cpu[mode].append(s)
        gc_mode("python")
        for mode in modes:
            us = [round(c / args.events * 1e6, 3) for c in cpu[mode]]
            key = name if len(modes) == 1 else f"{name}, gc {mode}"
            results[key] = {"cpu_us_per_event": us, "median": statistics.median(us), "min": min(us),
                            "alerts": alerts}
            print(json.dumps({key: results[key]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
