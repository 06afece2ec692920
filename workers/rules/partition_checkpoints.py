"""A partition's checkpoints: full snapshots, deltas of what changed since the last one, restore.

The snapshot half of ``engine.Partition`` (a mixin: it reads and sets the partition's state
declared below). The format's shared parts (device rows, rule groups, merging deltas) are in
snapshots.py.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import orjson

from alertpipe.workers.rules.snapshots import (
    _MIN_DELTA_BUDGET,
    SNAPSHOT_VERSION,
    _dump_device,
    _dump_devices,
    _merge_deltas,
    load_rules,
    rules_snapshot,
)
from alertpipe.workers.rules.state import _NEG, RuleState, _Ctx

__all__ = ["PartitionCheckpoints"]


class PartitionCheckpoints:
    max_ts: int
    wm: int
    devices: dict[str, Any]
    old_devices: dict[str, Any]
    rotate_at: int
    held: list[tuple[int, int, str]]
    n_held: int
    states: dict[str, RuleState]
    counts: dict[str, int]
    ctx: _Ctx
    dirty_devices: set[str]
    full_due: bool
    base_bytes: int
    delta_bytes: int

    def _retire_saved(self, rule: str, firing: list[Any]) -> None:
        raise NotImplementedError

    def checkpoint(self, **extra: Any) -> tuple[bool, bytes]:
        """(full, blob): a full ``snapshot``, or a delta of what changed since the last checkpoint.

        A full one when none was taken yet, after a rule-set change or a device rotation, when the
        previous checkpoint was not confirmed with ``saved`` (it may not have been written), or when
        the deltas since the last full one would outgrow it (restore reads at most about twice the
        state). ``restore(full, deltas)`` gives this partition's state back.
        """
        if not self.full_due:
            blob = self._delta(extra)
            if self.delta_bytes + len(blob) <= max(self.base_bytes, _MIN_DELTA_BUDGET):
                self.delta_bytes += len(blob)
                self.full_due = True  # until saved() confirms it
                return False, blob
        blob = self.snapshot(**extra)
        self.dirty_devices = set()
        for st in self.states.values():
            st.dirty = set()
        self.base_bytes = len(blob)
        self.delta_bytes = 0
        self.full_due = True
        return True, blob

    def saved(self) -> None:
        """The last ``checkpoint`` blob is written: the next one may be a delta on top of it."""
        self.full_due = False

    def _delta(self, extra: dict[str, Any]) -> bytes:
        devices, old = self.devices, self.old_devices
        rows = []
        for dev in self.dirty_devices:
            st = devices.get(dev)
            gen = 0
            if st is None:
                st, gen = old.get(dev), 1
            rows.append([-1, dev] if st is None else [gen, *_dump_device(dev, st)])
        self.dirty_devices = set()
        body = {
            "v": SNAPSHOT_VERSION,
            "delta": True,
            "maxTs": self.max_ts,
            "wm": self.wm,
            "rotateAt": self.rotate_at,
            "devices": rows,
            "rules": {n: {"groups": st.dump_dirty(), "firing": st.firing_summary()}
                      for n, st in self.states.items()},
            "counts": self.counts,
            **extra,
        }
        return orjson.dumps(body)

    def snapshot(self, **extra: Any) -> bytes:
        body = {
            "v": SNAPSHOT_VERSION,
            "maxTs": self.max_ts,
            "wm": self.wm,
            "devices": _dump_devices(self.devices),
            "oldDevices": _dump_devices(self.old_devices),
            "rotateAt": self.rotate_at,
            "rules": rules_snapshot(self.states),
            "counts": self.counts,
            **extra,
        }
        return orjson.dumps(body)

    def _load_devices(self, rows: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dev, nxt, pending, gaps in rows:
            pend = None
            if pending:
                pend = {}
                for q, t, i, d in pending:
                    pend[q] = (t, i, d)
                    self.held.append((t, q, dev))
            out[dev] = nxt if pend is None and gaps is None and nxt >= 0 else [nxt, pend, gaps]
        return out

    def restore(self, blob: bytes, deltas: Sequence[bytes] = ()) -> dict[str, Any]:
        """Load a snapshot (``snapshot`` or a full ``checkpoint``) and the deltas written after it;
        rules whose fingerprint changed start fresh."""
        body = orjson.loads(blob)
        if body.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {body.get('v')!r} is not {SNAPSHOT_VERSION}")
        if deltas:
            body = _merge_deltas(body, [orjson.loads(d) for d in deltas])
        self.base_bytes = len(blob)
        self.delta_bytes = sum(len(d) for d in deltas)
        self.dirty_devices = set()
        for st in self.states.values():
            st.dirty = set()
        # what is in Redis is this state, unless rules changed meanwhile: then start a new chain
        saved_fps = {n: r["fp"] for n, r in body["rules"].items()}
        self.full_due = saved_fps != {n: st.rule.fingerprint for n, st in self.states.items()}
        self.max_ts = body["maxTs"]
        self.wm = body["wm"]
        self.rotate_at = body.get("rotateAt", _NEG)
        self.held = []
        self.devices = self._load_devices(body["devices"])
        self.old_devices = self._load_devices(body.get("oldDevices", []))
        heapq.heapify(self.held)
        self.n_held = len(self.held)  # one heap entry per waiting event, as loaded
        self.ctx.heap = []
        for name, firing in load_rules(self.states, body["rules"], self.wm):
            self._retire_saved(name, firing)
        self.counts.update(body.get("counts", {}))
        skip = ("v", "maxTs", "wm", "devices", "oldDevices", "rules", "counts", "rotateAt")
        return {k: v for k, v in body.items() if k not in skip}
