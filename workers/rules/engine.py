"""The rule engine: per-partition event-time state that turns events into alert transitions. No I/O.

One ``Partition`` holds everything for one Kafka partition: the watermark, a reorder buffer per
device, and per rule its groups (threshold ``for`` timers, window panes, absence timers) and firing
set. Its whole state is one orjson snapshot, so the worker can checkpoint it with the offset it
covers and a restore + replay reproduces exactly the same transitions and alert ids. Checkpoints
are incremental (``checkpoint``): a full snapshot, then deltas holding only the devices and groups
touched since the previous checkpoint, until the deltas add up to the snapshot's size; restore
takes the snapshot plus its deltas.

Semantics (docs/rules.md has the user's version):

* Watermark = max event time seen in the partition − allowed lateness, advanced on every event,
  so results do not depend on how the stream was cut into batches. An event older than the
  watermark is *late* (the worker sends it to the late topic).
* Reorder: per device, the next expected ``seq``. The expected event is released at once; others
  wait until the watermark passes their time, then are released in seq order, and the missing
  seqs become a *gap* (recorded, never blocking). A device's first events wait the lateness bound
  (its first seq is unknown), so any order within the bound gives the same result.
* Timers (window ends, ``for``, absence) fire when the watermark passes them, in time order; a
  group's timers that are due before one of its events are fired before the event is applied, so
  arrival order inside the lateness bound never changes a result.
* Threshold: fires when a released event satisfies the condition (after holding ``for``), resolves
  at the group's first event that does not. Aggregate: panes of ``every``; at each window end the
  window's aggregate is tested; an empty window of a firing group resolves it. Absence: fires at
  last-seen + ``for`` once the watermark passes it, resolves at the group's next event.
* Idleness: the engine only moves with event time; the worker calls ``advance_to`` with a
  wall-clock-derived watermark when a partition has been idle and caught up (see the worker).

This module holds ``Partition`` and ``Engine``; a partition's checkpoints and restore are
partition_checkpoints.py; the rule kinds live in threshold.py, aggregate.py,
absence.py and forward.py over state.py's ``RuleState``, the snapshot format's shared parts in
snapshots.py. tests/reference holds an independent reference evaluator the engine is held to.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alertpipe.workers.rules.absence import AbsenceState
from alertpipe.workers.rules.aggregate import AggregateState
from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.forward import ForwardState
from alertpipe.workers.rules.lookups import NO_LOOKUPS, LookupView
from alertpipe.workers.rules.partition_checkpoints import PartitionCheckpoints
from alertpipe.workers.rules.snapshots import retired_alerts
from alertpipe.workers.rules.state import (
    _NEG,
    ACCEPTED,
    DUPLICATE,
    LATE,
    EngineSettings,
    RuleState,
    _Ctx,
)
from alertpipe.workers.rules.threshold import ThresholdState

__all__ = ["ACCEPTED", "DUPLICATE", "LATE", "AggregateState", "Engine", "EngineSettings", "Partition"]

MAX_GAPS_PER_DEVICE = 8


_STATES: dict[str, type[RuleState]] = {
    "threshold": ThresholdState, "aggregate": AggregateState, "absence": AbsenceState,
}


class Partition(PartitionCheckpoints):
    """All event-time state of one partition. Feed ``offer``; read ``take_alerts``/``take_gaps``."""

    def __init__(self, engine: Engine, partition: int) -> None:
        self.engine = engine
        self.partition = partition
        self.lateness = engine.settings.lateness_ms
        self.ctx = _Ctx(engine.settings, engine.clock, engine.lookups)
        self.max_ts = _NEG
        self.wm = _NEG
        # device -> next_seq (int: in order, nothing held, no gap), or
        #           [next_seq (-1: unknown), {seq: (ts, ingest, data)} | None, [[first, last], ...] | None]
        self.devices: dict[str, Any] = {}
        # Devices unseen for a generation move here; unseen for two, they are forgotten (a device that
        # comes back later starts afresh: its first events wait the lateness bound, no gap is recorded).
        self.old_devices: dict[str, Any] = {}
        self.rotate_at = _NEG
        self.held: list[tuple[int, int, str]] = []  # (ts, seq, device) of waiting events
        # events waiting in reorder buffers (``held`` also keeps entries released early, in seq order)
        self.n_held = 0
        self.states: dict[str, RuleState] = {}
        self.index: dict[str, tuple[RuleState, ...]] = {}
        self.wildcard: tuple[RuleState, ...] = ()
        self.gaps_out: list[dict[str, Any]] = []
        self.counts = {"accepted": 0, "duplicate": 0, "late": 0, "gaps": 0, "gap_seqs": 0, "released": 0}
        # incremental checkpoints: what changed since the last one, and when a full one is due
        self.dirty_devices: set[str] = set()
        self.full_due = True  # no full snapshot yet, the rules changed, devices rotated, or unsaved
        self.base_bytes = 0  # size of the last full snapshot
        self.delta_bytes = 0  # sizes of the deltas written since
        self.set_rules(engine.rules)

    # --- rules ---
    def set_rules(self, rules: Mapping[str, CompiledRule]) -> None:
        """Swap the rule set: unchanged rules (same fingerprint) keep their state."""
        old = self.states
        new: dict[str, RuleState] = {}
        forward = self.engine.settings.repartition
        for name, rule in rules.items():
            cls = ForwardState if forward and rule.spans_devices else _STATES[rule.kind]
            st = old.get(name)
            if st is not None and st.rule.fingerprint == rule.fingerprint and st.__class__ is cls:
                st.rule = rule
                new[name] = st
            else:
                new[name] = cls(rule, self.ctx)
        at = self.wm if self.wm > _NEG else 0
        for name, st in old.items():
            if new.get(name) is not st:
                st.retire(at)
        if set(new) != set(old) or any(new[n] is not old[n] for n in old if n in new):
            self.full_due = True  # a delta carries groups of the snapshot's rules only
        self.states = new
        by_type: dict[str, list[RuleState]] = {}
        wildcard: list[RuleState] = []
        for st in new.values():
            if st.rule.types:
                for t in st.rule.types:
                    by_type.setdefault(t, []).append(st)
            else:
                wildcard.append(st)
        self.wildcard = tuple(wildcard)
        self.index = {t: tuple(sts) + self.wildcard for t, sts in by_type.items()}

    # --- events ---
    def offer(self, d: dict[str, Any], device: str, seq: int, ts: int, ingest: int | None = None) -> int:
        """Take one decoded event (``d`` is its JSON object); ACCEPTED, DUPLICATE or LATE."""
        if ts < self.wm:
            self.counts["late"] += 1
            return LATE
        self.dirty_devices.add(device)
        devices = self.devices
        dev = devices.get(device)
        if dev is None and self.old_devices:
            dev = self.old_devices.pop(device, None)
            if dev is not None:
                devices[device] = dev
        if dev.__class__ is int:  # the common case: in order, nothing waiting, no gap recorded
            if seq == dev:
                devices[device] = seq + 1
                self._release(d, ts, ingest)
                return self._accepted(ts)
            if 0 <= seq < dev:
                self.counts["duplicate"] += 1
                return DUPLICATE
            dev = devices[device] = [dev, None, None]
        elif dev is None:
            dev = devices[device] = [-1, None, None]
        nxt = dev[0]
        if seq == nxt:
            dev[0] = seq + 1
            self._release(d, ts, ingest)
            if dev[1]:
                self._release_contiguous(dev)
            if dev[1] is None and dev[2] is None:
                devices[device] = dev[0]
        elif 0 <= seq < nxt:
            gaps = dev[2]
            if gaps and any(a <= seq <= b for a, b in gaps):
                self.counts["late"] += 1
                return LATE
            self.counts["duplicate"] += 1
            return DUPLICATE
        else:
            pending = dev[1]
            if pending is None:
                pending = dev[1] = {}
            elif seq in pending:
                self.counts["duplicate"] += 1
                return DUPLICATE
            pending[seq] = (ts, ingest, d)
            self.n_held += 1
            heapq.heappush(self.held, (ts, seq, device))
        return self._accepted(ts)

    def _accepted(self, ts: int) -> int:
        self.counts["accepted"] += 1
        if ts > self.max_ts:
            self.max_ts = ts
            if ts >= self.rotate_at:
                self._rotate(ts)
            wm = ts - self.lateness
            if wm > self.wm:
                held = self.held
                heap = self.ctx.heap
                if (held and held[0][0] <= wm) or (heap and heap[0][0] <= wm):
                    self.advance_to(wm)
                else:
                    self.wm = wm  # nothing due: advance_to would only set it
        return ACCEPTED

    def _retire_saved(self, rule: str, firing: list[Any]) -> None:
        """A rule changed or went away while no process ran: resolve the episodes its snapshot fired."""
        self.ctx.out.extend(retired_alerts(self.ctx.settings, self.ctx.clock, self.wm, rule, firing))

    def _rotate(self, ts: int) -> None:
        half = max(1, self.engine.settings.device_ttl_ms // 2)
        if self.rotate_at != _NEG:
            self.full_due = True  # every device moves: a delta would hold them all
            keep = {k: v for k, v in self.old_devices.items() if v.__class__ is list and v[1]}
            self.old_devices = self.devices
            self.old_devices.update(keep)  # never forget events still waiting in a reorder buffer
            self.devices = {}
        self.rotate_at = ts + half

    def _device(self, device: str) -> Any:
        dev = self.devices.get(device)
        if dev is None:
            dev = self.old_devices.pop(device, None)
            if dev is not None:
                self.devices[device] = dev
                self.dirty_devices.add(device)  # it changed generation: the next delta says so
        return dev

    def _release(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        self.counts["released"] += 1
        t = d.get("type")
        for st in self.index.get(t, self.wildcard) if t.__class__ is str else self.wildcard:
            flt = st.flt
            if flt is None or flt(d):
                st.on_event(d, ts, ingest)

    def _release_contiguous(self, dev: list[Any]) -> None:
        pending = dev[1]
        while pending:
            item = pending.pop(dev[0], None)
            if item is None:
                break
            self.n_held -= 1
            dev[0] += 1
            self._release(item[2], item[0], item[1])
        if not pending:
            dev[1] = None

    def advance_to(self, wm: int) -> None:
        """Move the watermark forward to ``wm``: release waiting events, then fire due timers."""
        if wm <= self.wm:
            return
        self.wm = wm
        held = self.held
        while held and held[0][0] <= wm:
            ts, seq, device = heapq.heappop(held)
            dev = self._device(device)
            if dev is None or dev.__class__ is int or not dev[1] or seq not in dev[1]:
                continue  # released already (in seq order with an earlier one)
            self._force_release(device, dev, seq)
        heap = self.ctx.heap
        while heap and heap[0][0] <= wm:
            due, _, st = heapq.heappop(heap)
            if self.states.get(st.name) is st:
                st.on_timer(due)

    def _force_release(self, device: str, dev: list[Any], upto: int) -> None:
        self.dirty_devices.add(device)
        pending = dev[1]
        for seq in sorted(s for s in pending if s <= upto):
            ts, ingest, d = pending.pop(seq)
            self.n_held -= 1
            nxt = dev[0]
            if nxt >= 0 and seq > nxt:
                self._gap(device, dev, nxt, seq - 1, ts)
            dev[0] = seq + 1
            self._release(d, ts, ingest)
        self._release_contiguous(dev)
        if not dev[1]:
            dev[1] = None
            if dev[2] is None and dev[0] >= 0:
                self.devices[device] = dev[0]

    def _gap(self, device: str, dev: list[Any], first: int, last: int, ts: int) -> None:
        self.counts["gaps"] += 1
        self.counts["gap_seqs"] += last - first + 1
        gaps = dev[2]
        if gaps is None:
            gaps = dev[2] = []
        gaps.append([first, last])
        del gaps[:-MAX_GAPS_PER_DEVICE]
        self.gaps_out.append({"deviceId": device, "partition": self.partition, "firstMissingSeq": first,
                              "lastMissingSeq": last, "missing": last - first + 1, "detectedAtMs": ts,
                              "watermarkMs": self.wm})

    def flush(self) -> None:
        """Release everything and fire every timer up to the last event time (offline tests, drains)."""
        if self.max_ts > _NEG:
            self.advance_to(self.max_ts)

    # --- output ---
    def take_alerts(self) -> list[dict[str, Any]]:
        out = self.ctx.out
        self.ctx.out = []
        return out

    def take_forwarded(self) -> list[tuple[CompiledRule, Any, int, int | None, dict[str, Any]]]:
        out = self.ctx.forwarded
        self.ctx.forwarded = []
        return out

    def held_events(self) -> list[dict[str, Any]]:
        """The events waiting in reorder buffers (after a restore: their lookup rows to prefetch)."""
        out: list[dict[str, Any]] = []
        for devices in (self.devices, self.old_devices):
            for dev in devices.values():
                if dev.__class__ is list and dev[1]:
                    out.extend(item[2] for item in dev[1].values())
        return out

    def take_gaps(self) -> list[dict[str, Any]]:
        out = self.gaps_out
        self.gaps_out = []
        return out

    @property
    def held_count(self) -> int:
        """Events waiting in reorder buffers (what the evaluator's gauge shows)."""
        return self.n_held

    def group_count(self) -> int:
        return sum(len(st.groups) for st in self.states.values())


class Engine:
    """The compiled rule set plus one ``Partition`` per assigned partition."""

    def __init__(
        self,
        settings: EngineSettings,
        rules: Sequence[CompiledRule] = (),
        clock: Callable[[], float] = time.time,
        lookups: LookupView = NO_LOOKUPS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.lookups = lookups  # rows lookup() reads; the evaluator fills it before each batch
        self.rules: dict[str, CompiledRule] = {r.name: r for r in rules}
        self.partitions: dict[int, Partition] = {}

    def partition(self, p: int) -> Partition:
        part = self.partitions.get(p)
        if part is None:
            part = self.partitions[p] = Partition(self, p)
        return part

    def drop(self, p: int) -> None:
        self.partitions.pop(p, None)

    def set_rules(self, rules: Sequence[CompiledRule], settings: EngineSettings | None = None) -> None:
        if settings is not None:
            self.settings = settings
        self.rules = {r.name: r for r in rules}
        for part in self.partitions.values():
            part.lateness = self.settings.lateness_ms
            part.ctx.settings = self.settings
            part.set_rules(self.rules)
