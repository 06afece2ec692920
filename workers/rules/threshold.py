"""Threshold rules: a released event satisfies the condition (held ``for`` in event time) and the
group's first event that does not resolves it. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from alertpipe.workers.rules.state import RuleState

__all__ = ["ThresholdState"]


# threshold group: [pending_since | None, firing_start | None, scheduled_due, event that started it]
class ThresholdState(RuleState):
    __slots__ = ()
    kind = "threshold"

    def on_event(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        key = self.key(d)
        if key is None:
            return
        g = self.groups.get(key)
        cond = self.cond
        if cond is not None and cond(d):
            self.dirty.add(key)
            if g is None:
                for_ms = self.rule.for_ms
                if for_ms == 0:
                    self.groups[key] = [None, ts, 0, None]
                    self.emit("firing", key, ts, ts, self._values(d), d, ingest)
                else:
                    self.groups[key] = [ts, None, ts + for_ms, d]
                    self._schedule(key, ts + for_ms)
            elif g[1] is None and ts >= g[0] + self.rule.for_ms:
                self._fire_pending(key, g)
        elif g is not None:
            self.dirty.add(key)
            if g[1] is None and ts >= g[0] + self.rule.for_ms:
                self._fire_pending(key, g)
            if g[1] is not None:
                self.emit("resolved", key, g[1], ts, self._values(d), d, ingest)
            del self.groups[key]

    def _values(self, d: Mapping[str, Any]) -> dict[str, Any]:
        cond = self.rule.condition
        if cond is None:
            return {}
        return {f: d[f] for f in sorted(cond.fields) if f in d}

    def _fire_pending(self, key: Any, g: list[Any]) -> None:
        at = g[0] + self.rule.for_ms
        d = g[3] or {}
        g[1] = at
        g[2] = 0
        g[3] = None
        self.emit("firing", key, at, at, self._values(d), d, None)

    def on_timer(self, due: int) -> None:
        for key in self._due(due):
            g = self.groups.get(key)
            if g is not None and g[2] == due and g[1] is None:
                self._fire_pending(key, g)

    def firing(self) -> Iterable[tuple[Any, int]]:
        return [(k, g[1]) for k, g in self.groups.items() if g[1] is not None]

    def reschedule(self, wm: int) -> None:
        for key, g in self.groups.items():
            if g[1] is None and g[2]:
                self._schedule(key, g[2])
