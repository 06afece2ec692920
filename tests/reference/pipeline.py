"""The engine as the evaluator runs it, without Kafka: stage 1 per events partition, the repartition
records, stage 2 per repartition partition, with checkpoints and restores where a test asks.

``run_engine`` takes the same (partition, event) arrival sequence as the reference evaluator and
returns every alert both stages emitted. Checkpoints are the worker's: incremental ones on stage 1
(a full snapshot, then deltas), confirmed at once; a *restore* drops the partition's state and
loads it back from its checkpoint chain, as a new process would after a crash right after that
checkpoint (the offsets it covers are the events fed so far, so nothing is replayed).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
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
from alertpipe.workers.rules.lookups import NO_LOOKUPS, LookupView

END = 2**60  # the watermark at the end of a run: every window closes, every timer fires


class Stage1Checkpoints:
    """One partition's checkpoint chain: the last full snapshot and the deltas after it."""

    def __init__(self) -> None:
        self.base: bytes | None = None
        self.deltas: list[bytes] = []

    def take(self, part: Partition) -> None:
        full, blob = part.checkpoint()
        part.saved()
        if full:
            self.base, self.deltas = blob, []
        else:
            self.deltas.append(blob)


def run_engine(
    rules: Sequence[CompiledRule],
    arrivals: Sequence[tuple[int, dict[str, Any]]],
    *,
    upstreams: int,
    lateness_ms: int,
    repartitions: int = 2,
    restore_at: Collection[int] = (),
    stage2_restore_every: int = 0,
    seed: int = 0,
    lookups: LookupView = NO_LOOKUPS,
) -> list[dict[str, Any]]:
    """Every alert of both stages. ``restore_at``: arrival indexes after which the event's
    partition checkpoints and restarts; ``stage2_restore_every``: a stage-2 snapshot and restore
    after every that many records (0: never)."""
    settings = EngineSettings("acme", "main", lateness_ms, repartition=True)
    engine = Engine(settings, list(rules), clock=lambda: 0.0, lookups=lookups)
    router = Router(repartitions)
    channels: dict[tuple[int, int], list[bytes]] = {}
    chains: dict[int, Stage1Checkpoints] = {}
    alerts: list[dict[str, Any]] = []

    def forward(u: int, part: Partition) -> None:
        alerts.extend(part.take_alerts())
        for rule, key, ts, ingest, d in part.take_forwarded():
            r, _key = router(rule, key)
            raw = encode_event(u, rule.name, rule.fingerprint, ts, ingest, project(router.keep(rule), d))
            channels.setdefault((u, r), []).append(raw)
        if part.max_ts > 0:
            for r in range(repartitions):
                channels.setdefault((u, r), []).append(encode_watermark(u, part.wm))

    busy = {u for u, _e in arrivals}
    for u in range(upstreams):  # a partition without events says so: stage 2 does not wait for it
        if u not in busy:
            for r in range(repartitions):
                channels.setdefault((u, r), []).append(encode_watermark(u, None))
    for i, (u, e) in enumerate(arrivals):
        part = engine.partition(u)
        part.offer(e, e["deviceId"], e["seq"], e["ts"])
        forward(u, part)
        if i in restore_at:
            chain = chains.setdefault(u, Stage1Checkpoints())
            chain.take(part)
            engine.drop(u)
            assert chain.base is not None
            engine.partition(u).restore(chain.base, chain.deltas)
        elif i % 7 == 3 and u in chains:  # checkpoints between restores make delta chains
            chains[u].take(part)
    for u in range(upstreams):
        part = engine.partition(u)
        part.advance_to(END)
        forward(u, part)
        for r in range(repartitions):
            channels.setdefault((u, r), []).append(encode_watermark(u, END))

    rng = random.Random(seed)
    for r in range(repartitions):
        stage = GroupStage(settings, list(rules), upstreams=upstreams, partition=r, clock=lambda: 0.0)
        queues = [list(q) for (_u, rr), q in sorted(channels.items()) if rr == r and q]
        n = 0
        while queues:  # the channels of one partition interleave; each keeps its own order
            q = rng.choice(queues)
            _apply(stage, q.pop(0))
            if not q:
                queues.remove(q)
            n += 1
            if stage2_restore_every and n % stage2_restore_every == 0:
                alerts.extend(stage.take_alerts())
                blob = stage.snapshot()
                stage = GroupStage(settings, list(rules), upstreams=upstreams, partition=r, clock=lambda: 0.0)
                stage.restore(blob)
        alerts.extend(stage.take_alerts())
    return alerts


def _apply(stage: GroupStage, raw: bytes) -> None:
    rec = decode_record(raw)
    if isinstance(rec, ForwardedEvent):
        stage.offer(rec.rule, rec.fingerprint, rec.event, rec.ts, rec.ingest)
    else:
        assert isinstance(rec, WatermarkRecord)
        stage.watermark(rec.upstream, rec.wm)
