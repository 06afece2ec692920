"""A pure simulation of the repartition pipeline: stage-1 partitions → channels → stage-2 partitions.

Each (upstream, repartition partition) pair is one ordered channel, as a producer's records to one
Kafka partition are; stage 2 reads the channels of its partition in an interleaving the test picks.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from alertpipe.workers.evaluator.repartition import (
    ForwardedEvent,
    Router,
    WatermarkRecord,
    decode_record,
    encode_event,
    encode_watermark,
    project,
)
from alertpipe.workers.rules import CompiledRule
from alertpipe.workers.rules.engine import Engine, EngineSettings, Partition
from alertpipe.workers.rules.groups import GroupStage

END = 2**60  # a watermark past everything: close every window


def upstream_of(device: str, n: int) -> int:
    return zlib.crc32(device.encode()) % n


@dataclass
class TwoStage:
    rules: list[CompiledRule]
    upstreams: int = 3
    partitions: int = 2
    lateness_ms: int = 5000
    channels: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = EngineSettings("acme", "main", self.lateness_ms, repartition=True)
        self.engine = Engine(s, self.rules, clock=lambda: 0.0)
        self.stage2 = {r: GroupStage(s, self.rules, upstreams=self.upstreams, partition=r, clock=lambda: 0.0)
                       for r in range(self.partitions)}
        self.alerts1: list[dict[str, Any]] = []  # per-device rules, stage 1
        self.router = Router(self.partitions)

    def part(self, u: int) -> Partition:
        return self.engine.partition(u)

    def send(self, u: int, part: Partition) -> None:
        """What the worker does after a batch of partition u: forward, then the watermark."""
        self.alerts1 += part.take_alerts()
        for rule, key, ts, ingest, d in part.take_forwarded():
            r, _k = self.router(rule, key)
            body = project(self.router.keep(rule), d)
            raw = encode_event(u, rule.name, rule.fingerprint, ts, ingest, body)
            self.channels.setdefault((u, r), []).append(raw)
        if part.max_ts > 0:
            for r in range(self.partitions):
                self.channels.setdefault((u, r), []).append(encode_watermark(u, part.wm))

    def feed(self, events: list[dict[str, Any]], batch: int = 5) -> None:
        """Stage 1: each upstream partition takes its devices' events in arrival order, in batches."""
        per: dict[int, list[dict[str, Any]]] = {}
        for e in events:
            per.setdefault(upstream_of(e["deviceId"], self.upstreams), []).append(e)
        for u, evs in sorted(per.items()):
            part = self.part(u)
            for i in range(0, len(evs), batch):
                for e in evs[i:i + batch]:
                    part.offer(e, e["deviceId"], e["seq"], e["ts"])
                self.send(u, part)

    def close(self) -> None:
        """Time moves on: every upstream (also those without events) sends a watermark past all."""
        for u in range(self.upstreams):
            part = self.part(u)
            part.advance_to(END)
            self.send(u, part)
            for r in range(self.partitions):
                self.channels.setdefault((u, r), []).append(encode_watermark(u, END))

    def drain(self, seed: int = 0, stages: dict[int, GroupStage] | None = None) -> list[dict[str, Any]]:
        """Stage 2 reads every channel in a random interleaving that keeps each channel's order."""
        rng = random.Random(seed)
        stages = stages if stages is not None else self.stage2
        out: list[dict[str, Any]] = []
        for r, stage in stages.items():
            queues = [list(q) for (u, rr), q in sorted(self.channels.items()) if rr == r and q]
            while queues:
                q = rng.choice(queues)
                apply(stage, q.pop(0))
                if not q:
                    queues.remove(q)
            out += stage.take_alerts()
        return out


def apply(stage: GroupStage, raw: bytes) -> int | None:
    rec = decode_record(raw)
    if isinstance(rec, ForwardedEvent):
        return stage.offer(rec.rule, rec.fingerprint, rec.event, rec.ts, rec.ingest)
    assert isinstance(rec, WatermarkRecord)
    stage.watermark(rec.upstream, rec.wm)
    return None


def whole_stream(rules: list[CompiledRule], events: list[dict[str, Any]], lateness_ms: int = 5000
                 ) -> list[dict[str, Any]]:
    """The reference: one partition sees every event (what `by: [site]` means)."""
    part = Engine(EngineSettings("acme", "main", lateness_ms), rules, clock=lambda: 0.0).partition(0)
    for e in events:
        part.offer(e, e["deviceId"], e["seq"], e["ts"])
    part.advance_to(END)
    return part.take_alerts()


def per_partition(rules: list[CompiledRule], events: list[dict[str, Any]], upstreams: int,
                  lateness_ms: int = 5000) -> list[dict[str, Any]]:
    """What the evaluator did before the repartition stage: each events partition on its own."""
    eng = Engine(EngineSettings("acme", "main", lateness_ms), rules, clock=lambda: 0.0)
    for e in events:
        eng.partition(upstream_of(e["deviceId"], upstreams)).offer(e, e["deviceId"], e["seq"], e["ts"])
    out = []
    for part in eng.partitions.values():
        part.advance_to(END)
        out += part.take_alerts()
    return out
