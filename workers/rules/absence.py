"""Absence rules: no selected event from a group for ``for`` (judged by the watermark) fires; the
group's next event resolves it. No I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.state import RuleState, _Ctx

__all__ = ["AbsenceState"]


# absence group: [last_seen, firing_start | None, scheduled_due]
class AbsenceState(RuleState):
    __slots__ = ("for_ms",)
    kind = "absence"

    def __init__(self, rule: CompiledRule, ctx: _Ctx) -> None:
        super().__init__(rule, ctx)
        self.for_ms = rule.absence_ms

    def on_event(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        key = self.key(d)
        if key is None:
            return
        self.dirty.add(key)
        g = self.groups.get(key)
        if g is None:
            due = ts + self.for_ms
            self.groups[key] = [ts, None, due]
            self._schedule(key, due)
            return
        if ts <= g[0]:
            return
        if g[1] is None and ts >= g[0] + self.for_ms:
            self._fire(key, g)  # the silence ended before the watermark saw it: same result
        if g[1] is not None:
            self.emit("resolved", key, g[1], ts, {"lastSeenMs": g[0], "silenceMs": ts - g[0]},
                      self._tctx(g, ts), ingest)
            g[1] = None
        g[0] = ts
        if not g[2]:
            g[2] = ts + self.for_ms
            self._schedule(key, g[2])

    def _tctx(self, g: list[Any], at: int) -> dict[str, Any]:
        return {"lastSeen": g[0], "for": self.rule.spec.absence.for_ if self.rule.spec.absence else "",
                "silence": (at - g[0]) / 1000}

    def _fire(self, key: Any, g: list[Any]) -> None:
        at = g[0] + self.for_ms
        g[1] = at
        g[2] = 0
        values = {"lastSeenMs": g[0], "silenceMs": self.for_ms}
        self.emit("firing", key, at, at, values, self._tctx(g, at), None)

    def on_timer(self, due: int) -> None:
        for key in self._due(due):
            g = self.groups.get(key)
            if g is None or g[2] != due or g[1] is not None:
                continue
            deadline = g[0] + self.for_ms
            if deadline <= due:
                self._fire(key, g)
            else:
                g[2] = deadline
                self._schedule(key, deadline)

    def firing(self) -> Iterable[tuple[Any, int]]:
        return [(k, g[1]) for k, g in self.groups.items() if g[1] is not None]

    def reschedule(self, wm: int) -> None:
        for key, g in self.groups.items():
            if g[2]:
                self._schedule(key, g[2])
