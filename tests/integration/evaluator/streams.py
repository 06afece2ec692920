"""Deterministic event streams for the evaluator tests, and the alerts the engine computes from them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.evaluator.worker import compile_rules, engine_settings
from alertpipe.workers.rules.engine import Engine

from .conftest import PARTITIONS, partition_of

T0 = 1_767_225_600_000

RULES: list[dict[str, Any]] = [
    {
        "name": "hot",
        "spec": {
            "select": {"types": ["cpu"]},
            "threshold": {"condition": "value > 90.0"},
            "annotations": {"summary": "{{ value }} on {{ deviceId }}"},
        },
    },
    {
        "name": "avg-high",
        "spec": {
            "select": {"types": ["cpu"]},
            "aggregate": {
                "fn": "avg",
                "field": "value",
                "window": "10s",
                "every": "5s",
                "condition": "value > 62.0",
            },
        },
    },
    {
        "name": "p90",
        "spec": {
            "select": {"types": ["cpu"]},
            "aggregate": {"fn": "p90", "field": "value", "window": "20s", "condition": "value > 85.0"},
            "for": "20s",
        },
    },
    {"name": "quiet", "spec": {"select": {"types": ["cpu"]}, "absence": {"for": "6s"}}},
]


@dataclass
class Stream:
    clean: list[dict[str, Any]]  # in event-time order
    gaps: list[dict[str, Any]]  # seqs the devices skipped (never sent in the clean stream)


def make_stream(seed: int, devices: int = 40, per_device: int = 120) -> Stream:
    rnd = random.Random(seed)
    clean: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    for d in range(devices):
        dev = f"dev-{seed}-{d}"
        t = T0 + rnd.randint(0, 3000)
        seq = 0
        hot_until = 0
        for _ in range(per_device):
            t += rnd.randint(200, 1200)
            if rnd.random() < 0.01:
                t += rnd.randint(6000, 9000)  # a silence: the absence rule fires
            if rnd.random() < 0.02:
                hot_until = t + rnd.randint(5000, 25_000)
            value = rnd.randint(85, 100) if t < hot_until else rnd.randint(10, 60)
            if rnd.random() < 0.01:
                value = 95
            ev = {"tenant": "acme", "deviceId": dev, "seq": seq, "ts": t, "type": "cpu", "value": value}
            if rnd.random() < 0.02:
                gaps.append(ev)  # the device skipped it
            else:
                clean.append(ev)
            seq += 1
    clean.sort(key=lambda e: (e["ts"], e["deviceId"]))
    return Stream(clean, gaps)


def dirty(
    stream: Stream, seed: int, lateness_ms: int = 5000
) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """Shuffled within lateness, 10 % duplicates, late gap fillers, malformed records."""
    rnd = random.Random(seed)
    keyed: list[tuple[int, int, dict[str, Any] | bytes, str]] = []
    n = 0
    for ev in stream.clean:
        keyed.append((ev["ts"] + rnd.randint(0, lateness_ms - 1000), n, ev, ev["deviceId"]))
        n += 1
        if rnd.random() < 0.10:
            keyed.append((ev["ts"] + rnd.randint(0, 30_000), n, ev, ev["deviceId"]))
            n += 1
    dups = n - len(stream.clean)
    late = 0
    part_max: dict[int, int] = {}
    for ev in stream.clean:
        p = partition_of(ev["deviceId"])
        part_max[p] = max(part_max.get(p, 0), ev["ts"])
    # gap fillers sent 40 s after their time: late, as long as their partition's stream goes on past them
    fillers = [ev for ev in stream.gaps if ev["ts"] < part_max[partition_of(ev["deviceId"])] - 10_000]
    for ev in fillers[: len(fillers) // 2]:
        keyed.append((ev["ts"] + 40_000, n, ev, ev["deviceId"]))  # far beyond the lateness bound
        n += 1
        late += 1
    garbage = [
        b"not json",
        b'{"tenant": "acme"}',
        orjson.dumps({**stream.clean[0], "tenant": "globex"}),
        orjson.dumps({**stream.clean[0], "seq": -1}),
        b"[1,2]",
        orjson.dumps({**stream.clean[0], "ts": "x"}),
    ]
    for i, raw in enumerate(garbage):
        when = stream.clean[len(stream.clean) * (i + 1) // (len(garbage) + 1)]["ts"]
        keyed.append((when, n, raw, f"junk-{i}"))
        n += 1
    keyed.sort(key=lambda k: (k[0], k[1]))
    records = [(dev, item if isinstance(item, bytes) else orjson.dumps(item)) for _, _, item, dev in keyed]
    return records, {
        "events": len(records),
        "clean": len(stream.clean),
        "duplicates": dups,
        "late": late,
        "malformed": len(garbage),
    }


def expected_alerts(cfg: PipelineConfig, clean: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the engine makes of the clean stream, partition by partition as Kafka delivers it."""
    engine = Engine(engine_settings(cfg), compile_rules(cfg), clock=lambda: 0.0)
    out: list[dict[str, Any]] = []
    for p in range(PARTITIONS):
        part = engine.partition(p)
        for ev in clean:
            if partition_of(ev["deviceId"]) == p:
                part.offer(ev, ev["deviceId"], ev["seq"], ev["ts"])
        out.extend(part.take_alerts())
    return out


def comparable(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keys = ("id", "status", "rule", "groupKey", "startsAtMs", "endsAtMs", "eventTimeMs", "severity")
    return sorted(
        tuple(a[k] for k in keys)
        + (
            orjson.dumps(a["values"], option=orjson.OPT_SORT_KEYS),
            orjson.dumps(a["annotations"], option=orjson.OPT_SORT_KEYS),
        )
        for a in alerts
    )
