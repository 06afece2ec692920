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

__all__ = ["MAX_QUANTILE_VALUES", "AggGroup", "AggregateState", "Pane"]

MAX_QUANTILE_VALUES = 20_000  # per pane; beyond it values are sampled deterministically


_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


class Pane:
    """One pane's accumulator: its index (event time // every), count, sum, min, max, and for the
    quantile functions its values (None otherwise). Slots: a million groups hold one each."""

    __slots__ = ("count", "index", "max", "min", "sum", "values")

    def __init__(self, index: int, count: int, total: float, lo: Any, hi: Any,
                 values: list[Any] | None = None) -> None:
        self.index = index
        self.count = count
        self.sum = total
        self.min = lo
        self.max = hi
        self.values = values

    def row(self) -> list[Any]:
        """The snapshot form: [index, count, sum, min, max] (+ [values] for quantiles)."""
        r = [self.index, self.count, self.sum, self.min, self.max]
        if self.values is not None:
            r.append(self.values)
        return r

    @staticmethod
    def from_row(r: list[Any]) -> Pane:
        return Pane(r[0], r[1], r[2], r[3], r[4], r[5] if len(r) > 5 else None)


class AggGroup:
    """An aggregate group: the window end it is evaluated at next (``due``), when its condition
    began to hold (``pending``, for ``for``) and when its firing episode began (``start``), and
    its live panes, oldest first."""

    __slots__ = ("due", "panes", "pending", "start")

    def __init__(self, due: int, pending: int | None, start: int | None, panes: list[Pane]) -> None:
        self.due = due
        self.pending = pending
        self.start = start
        self.panes = panes

    def row(self) -> list[Any]:
        """The snapshot form, flat: [due, pending, start, pane row, pane row, ...]."""
        out: list[Any] = [self.due, self.pending, self.start]
        for a in self.panes:  # Pane.row inlined: a delta holds every touched group
            r = [a.index, a.count, a.sum, a.min, a.max]
            if a.values is not None:
                r.append(a.values)
            out.append(r)
        return out

    @staticmethod
    def from_row(r: list[Any]) -> AggGroup:
        return AggGroup(r[0], r[1], r[2], [Pane.from_row(a) for a in r[3:]])


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
            self.groups[key] = AggGroup(due, None, None,
                                        [Pane(pane, 1, 0.0 + v, v, v, None if self.q is None else [v])])
            self._schedule(key, due)
            return
        acc = None
        for a in g.panes:
            if a.index == pane:
                acc = a
                break
        if acc is None:
            acc = Pane(pane, 0, 0.0, v, v, None if self.q is None else [])
            g.panes.append(acc)
            due = (pane + 1) * every
            if due < g.due:
                g.due = due
                self._schedule(key, due)
        acc.count += 1
        acc.sum += v
        if v < acc.min:
            acc.min = v
        if v > acc.max:
            acc.max = v
        vals = acc.values
        if vals is not None:
            if len(vals) < MAX_QUANTILE_VALUES:
                vals.append(v)
            elif acc.count % 2 == 0:  # deterministic thinning beyond the cap
                vals[acc.count // 2 % MAX_QUANTILE_VALUES] = v

    def value(self, accs: list[Pane]) -> tuple[Any, int]:
        n = sum(a.count for a in accs)
        if n == 0:
            return (0 if self.fn == "count" else MISSING), 0
        fn = self.fn
        if fn == "count":
            return n, n
        if fn == "sum":
            return math.fsum(a.sum for a in accs), n
        if fn == "avg":
            return math.fsum(a.sum for a in accs) / n, n
        if fn == "min":
            return min(a.min for a in accs), n
        if fn == "max":
            return max(a.max for a in accs), n
        vals = sorted(v for a in accs for v in a.values or ())
        q = self.q or 0.5
        # nearest-rank quantile: the smallest value with at least q of the values at or below it
        idx = max(0, math.ceil(q * len(vals)) - 1)
        return vals[idx], n

    def _value1(self, acc: Pane) -> Any:
        """``value([acc])`` of one pane (count > 0), without the generic walk over panes."""
        fn = self.fn
        if fn == "count":
            return acc.count
        if fn == "sum":
            return acc.sum
        if fn == "avg":
            return acc.sum / acc.count
        if fn == "min":
            return acc.min
        if fn == "max":
            return acc.max
        vals = sorted(acc.values or ())
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
            if g is None or g.due != due:
                continue
            if len(g.panes) == 1 and g.pending is None and g.start is None and not self.every_slide:
                # Fast path of the sparse case: one pane, neither pending nor firing. The result is
                # what _evaluate gives; only a condition that holds takes the general path.
                only = g.panes[0]
                pane = only.index
                if pane < first:  # its pane has left: an empty window
                    if not keep_empty:
                        del groups[key]
                        continue
                elif pane < last and (cond is None
                                      or not cond(self._value1(only), only.count, due - self.window, due)):
                    if pane != first:  # the window content stays this one pane until it leaves
                        nxt = (pane + self.n_panes + 1) * every
                        g.due = nxt
                        self._schedule(key, nxt)
                        continue
                    if not keep_empty:
                        del groups[key]  # it leaves at the next end: no later window holds it
                        continue
            self._evaluate(key, g, due)

    def _evaluate(self, key: Any, g: AggGroup, end: int) -> None:
        every, window = self.every, self.window
        first = (end - window) // every  # first pane index in the window
        last = end // every  # exclusive
        accs = [a for a in g.panes if first <= a.index < last]
        value, n = self.value(accs)
        cond = self.cond
        if cond is not None and cond(value, n, end - window, end):
            if g.start is None:
                if g.pending is None:
                    g.pending = end
                if end - g.pending >= self.rule.for_ms:
                    g.start = end
                    self.emit("firing", key, end, end, *self._describe(value, n, end))
        elif g.pending is not None or g.start is not None:
            g.pending = None
            if g.start is not None:
                self.emit("resolved", key, g.start, end, *self._describe(value, n, end))
                g.start = None
        # The next evaluation is the next window end whose content differs: a pane enters, or one
        # leaves (this window's oldest pane leaves at the very next end, so it counts before it is
        # dropped). In between the result cannot change, except for a pending `for`, which is
        # counted window by window.
        nxt = _next_change(g, end, every, window)
        if any(a.index <= first for a in g.panes):
            g.panes = [a for a in g.panes if a.index > first]  # no later window needs them
        if g.pending is not None and g.start is None:
            nxt = end + every
        elif self.every_slide and (accs or g.start is not None or nxt == end + every):
            nxt = end + every  # the group lives at the next end: it is evaluated there
        elif nxt == _FAR:  # nothing in this window or later
            if g.start is None:
                del self.groups[key]
                return
            g.due = _FAR  # firing on an empty window (it holds there): only a new event can change it
            return
        elif not g.panes and g.start is None and not self.empty_fires:
            del self.groups[key]  # its last pane leaves: the empty windows after it cannot fire
            return
        g.due = nxt
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
        return [(k, g.start) for k, g in self.groups.items() if g.start is not None]

    def reschedule(self, wm: int) -> None:
        for key, g in self.groups.items():
            self._schedule(key, g.due)

    # snapshots keep the flat rows of before (AggGroup.row): the format did not change
    def dump(self) -> list[Any]:
        return [[k, g.row()] for k, g in self.groups.items()]

    def dump_dirty(self) -> list[Any]:
        return [[k, g.row() if g is not None else None] for k, g in super().dump_dirty()]

    def load(self, rows: list[Any], wm: int, mend: bool = False) -> None:
        super().load([[k, AggGroup.from_row(v)] for k, v in rows], wm)
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
            if g.panes and g.pending is None:
                due = max(nxt, min(a.index + 1 for a in g.panes) * every)
                if due < g.due:
                    g.due = due
                    self._schedule(key, due)


def _next_change(g: AggGroup, end: int, every: int, window: int) -> int:
    """The first window end after ``end`` where a pane of group ``g`` enters or leaves (or _FAR)."""
    nxt = _FAR
    for a in g.panes:
        e = (a.index + 1) * every  # the first window end that holds the pane
        if e <= end:
            e += window  # the first that no longer does
            if e <= end:
                continue
        if e < nxt:
            nxt = e
    return nxt
