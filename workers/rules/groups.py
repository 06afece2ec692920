"""Stage 2 of the repartition: rule state per group key for rules whose groups span devices. No I/O.

Stage 1 (``engine.Partition`` with ``EngineSettings.repartition``) reorders, dedups and filters per
events partition and forwards each selected event of such a rule, keyed by (rule, group key), to
the repartition topic, followed by its partition watermark. One ``GroupStage`` holds the state of
one repartition partition, the same way ``Partition`` does for an events partition:

* **Watermark** = the minimum over every upstream (events) partition of the last watermark it sent;
  an upstream not heard from yet holds it back (its events may be old), one that announced it is
  idle and has never carried an event is left out (Flink's idleness). It only moves forward.
* **Order**: forwarded events wait until the watermark passes them and are then applied in
  (event time, deviceId, seq) order, so the result does not depend on how the upstream partitions
  interleave; timers (window ends, ``for``, absence) fire by the watermark as in stage 1.
* **Idempotency**: stage 1 releases each device's events in seq order, so per (rule, deviceId) the
  highest seq taken is enough: a copy from a stage-1 replay (crash, rebalance) has a seq at or
  below it and is skipped. Entries of devices silent for ``device_ttl_ms`` are forgotten (two
  generations, as stage 1 does), which is when stage 1's own dedup forgets them too.
* **Late**: a new event older than the watermark (possible only after an idle upstream wakes up,
  or when a replay differs from the original through stage 1's wall-clock idleness rule) is LATE.
* **Revisions**: a record carries its rule's fingerprint; one for another revision of the rule
  is STALE (the rule changed: its state starts afresh, as in stage 1).

Snapshots and restore mirror ``Partition`` (orjson, the offset they cover travels in ``extra``).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.engine import _STATES
from alertpipe.workers.rules.snapshots import load_rules, retired_alerts, rules_snapshot
from alertpipe.workers.rules.state import (
    _NEG,
    ACCEPTED,
    DUPLICATE,
    LATE,
    EngineSettings,
    RuleState,
    _Ctx,
    _group_text,
)

__all__ = ["ACCEPTED", "DUPLICATE", "LATE", "STALE", "GroupStage", "group_text", "merged_watermark"]

STALE = 3  # forwarded under another revision of the rule (or for a rule not loaded here)
SNAPSHOT_VERSION = 1


def group_text(rule: CompiledRule, key: Any) -> str:
    """The group key as alerts show it (``site=berlin``): also the repartition record key."""
    return _group_text(rule, key)


def merged_watermark(upstreams: int, wms: Mapping[int, int], idle: set[int] | frozenset[int]) -> int | None:
    """The watermark of stage 2: min over the upstream partitions ``0..upstreams-1``.

    An upstream not heard from counts as minus infinity (it holds the watermark back); one in
    ``idle`` (announced idle, never carried an event) is left out. None when all are idle.
    """
    out: int | None = None
    for u in range(upstreams):
        if u in idle:
            continue
        w = wms.get(u, _NEG)
        if out is None or w < out:
            out = w
    return out


class GroupStage:
    """Rule state of one repartition partition. Feed ``offer`` and ``watermark``; read ``take_alerts``."""

    def __init__(
        self,
        settings: EngineSettings,
        rules: Sequence[CompiledRule],
        *,
        upstreams: int,
        partition: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.partition = partition
        self.upstreams = upstreams
        self.ctx = _Ctx(settings, clock)
        self.wm = _NEG
        self.wms: dict[int, int] = {}  # upstream partition -> its last watermark
        self.idle: set[int] = set()  # upstreams that announced idle (and never carried an event)
        # (ts, deviceId, seq, rule, fingerprint, ingest, event), waiting for the watermark
        self.held: list[tuple[int, str, int, str, str, int | None, dict[str, Any]]] = []
        self.last_seq: dict[tuple[str, str], int] = {}
        self.old_last_seq: dict[tuple[str, str], int] = {}
        self.rotate_at = _NEG
        self.states: dict[str, RuleState] = {}
        self.counts = {"accepted": 0, "duplicate": 0, "late": 0, "stale": 0}
        self.set_rules(rules)

    # --- rules ---
    def set_rules(self, rules: Sequence[CompiledRule] | Mapping[str, CompiledRule],
                  settings: EngineSettings | None = None) -> None:
        """Swap the rule set (only rules that span devices are kept): unchanged rules keep state."""
        if settings is not None:
            self.settings = self.ctx.settings = settings
        items = rules.values() if isinstance(rules, Mapping) else rules
        old = self.states
        new: dict[str, RuleState] = {}
        for rule in items:
            if not rule.spans_devices:
                continue
            st = old.get(rule.name)
            if st is not None and st.rule.fingerprint == rule.fingerprint:
                st.rule = rule
                new[rule.name] = st
            else:
                new[rule.name] = _STATES[rule.kind](rule, self.ctx)
        at = self.wm if self.wm > _NEG else 0
        for name, st in old.items():
            if new.get(name) is not st:
                st.retire(at)
        self.states = new

    # --- input ---
    def offer(self, rule: str, fingerprint: str, d: dict[str, Any], ts: int,
              ingest: int | None = None) -> int:
        """One forwarded event (``d`` holds deviceId and seq): ACCEPTED, DUPLICATE, LATE or STALE."""
        st = self.states.get(rule)
        if st is None or st.rule.fingerprint != fingerprint:
            self.counts["stale"] += 1
            return STALE
        device: str = d["deviceId"]
        seq: int = d["seq"]
        k = (rule, device)
        last = self.last_seq.get(k)
        if last is None and self.old_last_seq:
            last = self.old_last_seq.pop(k, None)
        if last is not None and seq <= last:
            self.last_seq[k] = last
            self.counts["duplicate"] += 1
            return DUPLICATE
        self.last_seq[k] = seq
        if ts < self.wm:
            self.counts["late"] += 1
            return LATE
        heapq.heappush(self.held, (ts, device, seq, rule, fingerprint, ingest, d))
        self.counts["accepted"] += 1
        return ACCEPTED

    def watermark(self, upstream: int, wm: int | None) -> None:
        """An upstream partition's watermark record; None: idle and has never carried an event."""
        if wm is None:
            if upstream not in self.wms:
                self.idle.add(upstream)
        else:
            self.idle.discard(upstream)
            if wm > self.wms.get(upstream, _NEG):
                self.wms[upstream] = wm
        self._merge()

    def set_upstreams(self, upstreams: int) -> None:
        """The events topic's partition count (it can grow; a new partition holds the watermark)."""
        self.upstreams = max(self.upstreams, upstreams)
        self._merge()

    def _merge(self) -> None:
        target = merged_watermark(self.upstreams, self.wms, self.idle)
        if target is not None and target > self.wm:
            self.advance_to(target)

    def advance_to(self, wm: int) -> None:
        """Apply the held events older than ``wm`` in (ts, deviceId, seq) order, then fire timers."""
        if wm <= self.wm:
            return
        self.wm = wm
        held = self.held
        states = self.states
        while held and held[0][0] < wm:
            ts, _dev, _seq, name, fp, ingest, d = heapq.heappop(held)
            st = states.get(name)
            if st is not None and st.rule.fingerprint == fp:
                st.on_event(d, ts, ingest)
        heap = self.ctx.heap
        while heap and heap[0][0] <= wm:
            due, _, st = heapq.heappop(heap)
            if states.get(st.name) is st:
                st.on_timer(due)
        if wm >= self.rotate_at:
            self._rotate(wm)

    def _rotate(self, wm: int) -> None:
        half = max(1, self.settings.device_ttl_ms // 2)
        if self.rotate_at != _NEG:
            self.old_last_seq = self.last_seq
            self.last_seq = {}
        self.rotate_at = wm + half

    def flush(self) -> None:
        """Apply everything held and fire timers up to the last held event (offline tests)."""
        if self.held:
            self.advance_to(max(h[0] for h in self.held) + 1)

    # --- output ---
    def take_alerts(self) -> list[dict[str, Any]]:
        out = self.ctx.out
        self.ctx.out = []
        return out

    def group_count(self) -> int:
        return sum(len(st.groups) for st in self.states.values())

    # --- snapshot ---
    def snapshot(self, **extra: Any) -> bytes:
        body = {
            "v": SNAPSHOT_VERSION,
            "wm": self.wm,
            "wms": sorted(self.wms.items()),
            "idle": sorted(self.idle),
            "held": [list(h) for h in self.held],
            "seen": [[r, dev, s] for (r, dev), s in self.last_seq.items()],
            "oldSeen": [[r, dev, s] for (r, dev), s in self.old_last_seq.items()],
            "rotateAt": self.rotate_at,
            "rules": rules_snapshot(self.states),
            "counts": self.counts,
            **extra,
        }
        return orjson.dumps(body)

    def restore(self, blob: bytes) -> dict[str, Any]:
        """Load a snapshot; rules whose fingerprint changed start fresh (their episodes resolve)."""
        body = orjson.loads(blob)
        if body.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"group snapshot version {body.get('v')!r} is not {SNAPSHOT_VERSION}")
        self.wm = body["wm"]
        self.wms = {int(u): w for u, w in body["wms"]}
        self.idle = set(body["idle"])
        self.held = [(t, dev, s, r, fp, i, d) for t, dev, s, r, fp, i, d in body["held"]]
        heapq.heapify(self.held)
        self.last_seq = {(r, dev): s for r, dev, s in body["seen"]}
        self.old_last_seq = {(r, dev): s for r, dev, s in body["oldSeen"]}
        self.rotate_at = body["rotateAt"]
        self.ctx.heap = []
        for name, firing in load_rules(self.states, body["rules"], self.wm):
            self._retire_saved(name, firing)
        self.counts.update(body.get("counts", {}))
        skip = ("v", "wm", "wms", "idle", "held", "seen", "oldSeen", "rotateAt", "rules", "counts")
        return {k: v for k, v in body.items() if k not in skip}

    def _retire_saved(self, rule: str, firing: list[Any]) -> None:
        """A rule changed or went away while no process ran (as ``Partition._retire_saved``)."""
        self.ctx.out.extend(retired_alerts(self.settings, self.ctx.clock, self.wm, rule, firing))
