"""Aggregate rules: panes of ``every``, windows of ``window`` aligned to the epoch, the condition
tested at each window end whose content differs (a pane enters or leaves), ``for`` counted window
by window, empty windows included. No I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from alertpipe.workers.rules.cel import MISSING
from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.state import _FAR, RuleState, _Ctx, _get_path

__all__ = ["MAX_QUANTILE_VALUES", "AggregateState"]

MAX_QUANTILE_VALUES = 20_000  # per pane; beyond it values are sampled deterministically


# aggregate group: [next_due, pending_since | None, firing_start | None, acc, acc, ...] (flat: a
# list per group and one per live pane is the smallest layout, which matters at a million groups)
# acc: [pane, count, sum, min, max] or [pane, count, sum, min, max, values] for quantiles
_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


class AggregateState(RuleState):
    __slots__ = ("every", "window", "fn", "field", "q", "n_panes", "empty_fires", "every_slide")
    kind = "aggregate"

    def __init__(self, rule: CompiledRule, ctx: _Ctx) -> None:
        super().__init__(rule, ctx)
        self.every = rule.every_ms
        self.window = rule.window_ms
        self.fn = rule.fn or "count"
        self.field = rule.field[0] if rule.field and len(rule.field) == 1 else None
        self.q = _QUANTILES.get(self.fn)
        self.n_panes = self.window // self.every
        # does the condition hold on an empty window? (`count < 5` does): then an emptied group
        # must be evaluated like any other, else it can simply go. One that reads the window's
        # bounds may hold on some empty windows and not others: it is evaluated like one that holds.
        empty = 0 if self.fn == "count" else MISSING
        cond = rule.condition
        # A condition that reads the window's bounds can change its verdict with no change of
        # content: such a rule is evaluated at every window end while its group lives (its window
        # holds values, its values just left, or it fires or is pending).
        self.every_slide = cond is not None and bool(cond.names & {"windowStart", "windowEnd"})
        self.empty_fires = cond is not None and (self.every_slide or bool(cond.fn(empty, 0, 0, 0)))

    def on_event(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        key = self.key(d)
        if key is None:
            return
        v: Any
        if self.fn != "count":
            f = self.field
            v = d.get(f) if f is not None else _get_path(d, self.rule.field or ())
            cls = v.__class__
            if cls is not int and cls is not float:
                return  # not a number: this rule skips the event (documented)
            if v != v:  # NaN
                return
        else:
            v = 1
        self.dirty.add(key)
        every = self.every
        pane = ts // every
        g = self.groups.get(key)
        if g is None:  # a new group: its first pane holds this one value
            due = (pane + 1) * every
            self.groups[key] = [due, None, None,
                                [pane, 1, 0.0 + v, v, v] if self.q is None else [pane, 1, 0.0 + v, v, v, [v]]]
            self._schedule(key, due)
            return
        acc = None
        for i in range(3, len(g)):
            if g[i][0] == pane:
                acc = g[i]
                break
        if acc is None:
            acc = [pane, 0, 0.0, v, v] if self.q is None else [pane, 0, 0.0, v, v, []]
            g.append(acc)
            due = (pane + 1) * every
            if due < g[0]:
                g[0] = due
                self._schedule(key, due)
        acc[1] += 1
        acc[2] += v
        if v < acc[3]:
            acc[3] = v
        if v > acc[4]:
            acc[4] = v
        if self.q is not None:
            vals = acc[5]
            if len(vals) < MAX_QUANTILE_VALUES:
                vals.append(v)
            elif acc[1] % 2 == 0:  # deterministic thinning beyond the cap
                vals[acc[1] // 2 % MAX_QUANTILE_VALUES] = v

    def value(self, accs: list[list[Any]]) -> tuple[Any, int]:
        n = sum(a[1] for a in accs)
        if n == 0:
            return (0 if self.fn == "count" else MISSING), 0
        fn = self.fn
        if fn == "count":
            return n, n
        if fn == "sum":
            return math.fsum(a[2] for a in accs), n
        if fn == "avg":
            return math.fsum(a[2] for a in accs) / n, n
        if fn == "min":
            return min(a[3] for a in accs), n
        if fn == "max":
            return max(a[4] for a in accs), n
        vals = sorted(v for a in accs for v in a[5])
        q = self.q or 0.5
        # nearest-rank quantile: the smallest value with at least q of the values at or below it
        idx = max(0, math.ceil(q * len(vals)) - 1)
        return vals[idx], n

    def _value1(self, acc: list[Any]) -> Any:
        """``value([acc])`` of one pane (count > 0), without the generic walk over panes."""
        fn = self.fn
        if fn == "count":
            return acc[1]
        if fn == "sum":
            return acc[2]
        if fn == "avg":
            return acc[2] / acc[1]
        if fn == "min":
            return acc[3]
        if fn == "max":
            return acc[4]
        vals = sorted(acc[5])
        return vals[max(0, math.ceil((self.q or 0.5) * len(vals)) - 1)]

    def on_timer(self, due: int) -> None:
        groups = self.groups
        every = self.every
        first = (due - self.window) // every  # the window ending at `due` holds panes first..last-1
        last = due // every
        cond = self.cond
        keep_empty = self.empty_fires
        for key in self._due(due):
            g = groups.get(key)
            if g is None or g[0] != due:
                continue
            if len(g) == 4 and g[1] is None and g[2] is None and not self.every_slide:
                # Fast path of the sparse case: one pane, neither pending nor firing. The result is
                # what _evaluate gives; only a condition that holds takes the general path.
                pane = g[3][0]
                if pane < first:  # its pane has left: an empty window
                    if not keep_empty:
                        del groups[key]
                        continue
                elif pane < last and (cond is None
                                      or not cond(self._value1(g[3]), g[3][1], due - self.window, due)):
                    if pane != first:  # the window content stays this one pane until it leaves
                        nxt = (pane + self.n_panes + 1) * every
                        g[0] = nxt
                        self._schedule(key, nxt)
                        continue
                    if not keep_empty:
                        del groups[key]  # it leaves at the next end: no later window holds it
                        continue
            self._evaluate(key, g, due)

    def _evaluate(self, key: Any, g: list[Any], end: int) -> None:
        every, window = self.every, self.window
        first = (end - window) // every  # first pane index in the window
        last = end // every  # exclusive
        accs = [a for a in g[3:] if first <= a[0] < last]
        value, n = self.value(accs)
        cond = self.cond
        if cond is not None and cond(value, n, end - window, end):
            if g[2] is None:
                if g[1] is None:
                    g[1] = end
                if end - g[1] >= self.rule.for_ms:
                    g[2] = end
                    self.emit("firing", key, end, end, *self._describe(value, n, end))
        elif g[1] is not None or g[2] is not None:
            g[1] = None
            if g[2] is not None:
                self.emit("resolved", key, g[2], end, *self._describe(value, n, end))
                g[2] = None
        # The next evaluation is the next window end whose content differs: a pane enters, or one
        # leaves (this window's oldest pane leaves at the very next end, so it counts before it is
        # dropped). In between the result cannot change, except for a pending `for`, which is
        # counted window by window.
        nxt = _next_change(g, end, every, window)
        if any(a[0] <= first for a in g[3:]):
            g[3:] = [a for a in g[3:] if a[0] > first]  # no later window needs them
        if g[1] is not None and g[2] is None:
            nxt = end + every
        elif self.every_slide and (accs or g[2] is not None or nxt == end + every):
            nxt = end + every  # the group lives at the next end: it is evaluated there
        elif nxt == _FAR:  # nothing in this window or later
            if g[2] is None:
                del self.groups[key]
                return
            g[0] = _FAR  # firing on an empty window (it holds there): only a new event can change it
            return
        elif len(g) == 3 and g[2] is None and not self.empty_fires:
            del self.groups[key]  # its last pane leaves: the empty windows after it cannot fire
            return
        g[0] = nxt
        self._schedule(key, nxt)

    def _describe(self, value: Any, n: int, end: int) -> tuple[dict[str, Any], dict[str, Any], None]:
        """(values, template context, ingest time) of a transition; built only when one happens."""
        v = value if value is not MISSING else None
        start = end - self.window
        agg = self.rule.spec.aggregate
        values = {"value": v, "count": n, "windowStartMs": start, "windowEndMs": end}
        tctx = {"value": v, "count": n, "fn": self.fn, "window": agg.window if agg else "",
                "windowStart": start, "windowEnd": end}
        return values, tctx, None

    def firing(self) -> Iterable[tuple[Any, int]]:
        return [(k, g[2]) for k, g in self.groups.items() if g[2] is not None]


    def reschedule(self, wm: int) -> None:
        for key, g in self.groups.items():
            self._schedule(key, g[0])

    def load(self, rows: list[Any], wm: int, mend: bool = False) -> None:
        super().load(rows, wm)
        if mend:
            self._mend(wm)

    def _mend(self, wm: int) -> None:
        """A snapshot of a version that skipped the window end where the oldest pane leaves can
        point a group past it, and that pane is gone from the state: so each group with panes is
        also tested at the first end the watermark has not passed (or where its first pane enters,
        if later). A window whose content did not change gives the verdict the group holds."""
        every = self.every
        nxt = (wm // every + 1) * every
        for key, g in self.groups.items():
            if len(g) > 3 and g[1] is None:
                due = max(nxt, min(a[0] + 1 for a in g[3:]) * every)
                if due < g[0]:
                    g[0] = due
                    self._schedule(key, due)


def _next_change(g: list[Any], end: int, every: int, window: int) -> int:
    """The first window end after ``end`` where a pane of group ``g`` enters or leaves (or _FAR)."""
    nxt = _FAR
    for a in g[3:]:
        e = (a[0] + 1) * every  # the first window end that holds the pane
        if e <= end:
            e += window  # the first that no longer does
            if e <= end:
                continue
        if e < nxt:
            nxt = e
    return nxt
