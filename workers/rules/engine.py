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
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from alertpipe.workers.alerts import alert_id
from alertpipe.workers.rules.cel import MISSING
from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.templates import render_value

__all__ = ["ACCEPTED", "DUPLICATE", "LATE", "Engine", "EngineSettings", "Partition"]

ACCEPTED = 0  # released or waiting in the reorder buffer: it will be evaluated
DUPLICATE = 1  # a seq this device already released or holds
LATE = 2  # older than the watermark

SNAPSHOT_VERSION = 1
# How the saved next window ends were scheduled: 2 counts the end where the oldest pane leaves
# (snapshots without it are mended on restore, ``AggregateState._mend``).
ENDS_VERSION = 2
_NEG = -(2**62)
_FAR = 2**62
MAX_GAPS_PER_DEVICE = 8
MAX_QUANTILE_VALUES = 20_000  # per pane; beyond it values are sampled deterministically


@dataclass(frozen=True, slots=True)
class EngineSettings:
    tenant: str
    pipeline: str
    lateness_ms: int = 5000
    revision: str = ""
    # reorder state of a silent device is dropped after between half of this and this (event time)
    device_ttl_ms: int = 86_400_000
    # rules whose groups span devices are forwarded (``take_forwarded``), not evaluated here
    repartition: bool = False


class _Ctx:
    """What rule states need from their partition: settings, output, timers, clock."""

    __slots__ = ("settings", "out", "heap", "counter", "clock", "fired", "resolved", "forwarded")

    def __init__(self, settings: EngineSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.out: list[dict[str, Any]] = []
        self.heap: list[tuple[int, int, RuleState]] = []
        self.counter = 0
        self.clock = clock
        self.fired: dict[str, int] = {}
        self.resolved: dict[str, int] = {}
        # (rule, group key, ts, ingest, event) for the repartition stage (alertpipe.workers.rules.groups)
        self.forwarded: list[tuple[CompiledRule, Any, int, int | None, dict[str, Any]]] = []

    def schedule(self, due: int, rs: RuleState) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (due, self.counter, rs))


def _group_text(rule: CompiledRule, key: Any) -> str:
    if len(rule.by_names) == 1:
        return f"{rule.by_names[0]}={render_value(key)}"
    return ",".join(f"{n}={render_value(v)}" for n, v in zip(rule.by_names, key, strict=True))


def _group_labels(rule: CompiledRule, key: Any) -> dict[str, str]:
    labels = dict(rule.labels)
    if len(rule.by_names) == 1:
        labels[rule.by_names[0]] = render_value(key)
    else:
        for n, v in zip(rule.by_names, key, strict=True):
            labels[n] = render_value(v)
    return labels


def _get_path(d: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = d
    for p in path:
        if cur.__class__ is not dict:
            return None
        cur = cur.get(p)
    return cur


def _key_fn(rule: CompiledRule) -> Callable[[dict[str, Any]], Any]:
    """The group key of an event: the value (one field) or a tuple; None when a field is missing."""
    paths = rule.by
    if len(paths) == 1 and len(paths[0]) == 1:
        name = paths[0][0]

        def one(d: dict[str, Any]) -> Any:
            v = d.get(name)
            return v if v.__class__ in (str, int) else _hashable(v)

        return one

    def many(d: dict[str, Any]) -> Any:
        out = []
        for p in paths:
            v = _hashable(_get_path(d, p))
            if v is None:
                return None
            out.append(v)
        return tuple(out)

    return many


def _hashable(v: Any) -> Any:
    if v is None or v.__class__ in (str, int, float, bool):
        return v
    return None  # objects and lists cannot key a group: the event is skipped by that rule


class RuleState:
    """Per-partition state of one rule; subclasses per kind."""

    __slots__ = ("rule", "ctx", "groups", "key", "flt", "cond", "name", "due_groups", "dirty")

    kind = ""

    def __init__(self, rule: CompiledRule, ctx: _Ctx) -> None:
        self.rule = rule
        self.ctx = ctx
        self.groups: dict[Any, list[Any]] = {}
        self.key = _key_fn(rule)
        self.flt = rule.filter.fn if rule.filter is not None else None
        self.cond = rule.condition.fn if rule.condition is not None else None
        self.name = rule.name
        self.due_groups: dict[int, set[Any]] = {}
        self.dirty: set[Any] = set()  # group keys touched since the last checkpoint (their delta)

    def _schedule(self, key: Any, due: int) -> None:
        s = self.due_groups.get(due)
        if s is None:
            s = self.due_groups[due] = set()
            self.ctx.schedule(due, self)
        s.add(key)

    def _due(self, due: int) -> list[Any]:
        keys = self.due_groups.pop(due, None)
        if not keys:
            return []
        self.dirty.update(keys)
        return list(keys)

    # --- hot path ---
    def on_event(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        raise NotImplementedError

    def on_timer(self, due: int) -> None:
        raise NotImplementedError

    # --- output ---
    def emit(
        self,
        status: str,
        key: Any,
        start: int,
        at: int,
        values: dict[str, Any],
        tctx: Mapping[str, Any],
        ingest: int | None,
    ) -> None:
        ctx = self.ctx
        s = ctx.settings
        rule = self.rule
        group = _group_text(rule, key)
        ctx_all = {**tctx, "rule": rule.name, "severity": rule.severity, "groupKey": group}
        if len(rule.by_names) == 1:
            ctx_all.setdefault(rule.by_names[0], key)
        else:
            for n, v in zip(rule.by_names, key, strict=True):
                ctx_all.setdefault(n, v)
        ctx.out.append({
            "id": alert_id(s.tenant, s.pipeline, rule.name, group, start),
            "status": status,
            "tenant": s.tenant,
            "pipeline": s.pipeline,
            "rule": rule.name,
            "severity": rule.severity,
            "groupKey": group,
            "labels": _group_labels(rule, key),
            "annotations": {k: t.render(ctx_all) for k, t in rule.annotations.items()},
            "values": values,
            "channels": list(rule.channels),
            "startsAtMs": start,
            "endsAtMs": at if status == "resolved" else None,
            "eventTimeMs": at,
            "ingestTimeMs": ingest,
            "processedAtMs": int(ctx.clock() * 1000),
            "revision": s.revision,
        })
        counts = ctx.fired if status == "firing" else ctx.resolved
        counts[rule.name] = counts.get(rule.name, 0) + 1

    def firing(self) -> Iterable[tuple[Any, int]]:
        """(group key, episode start) of every firing group."""
        raise NotImplementedError

    def retire(self, at: int) -> None:
        """The rule changed or went away: resolve what fires, as of event time ``at``."""
        for key, start in list(self.firing()):
            self.emit("resolved", key, start, max(at, start), {"reason": "rule changed or removed"}, {}, None)
        self.groups.clear()

    # --- snapshot ---
    def firing_summary(self) -> list[Any]:
        """What a later process needs to resolve these episodes if this rule is gone by then."""
        r = self.rule
        return [[_group_text(r, k), start, r.severity, _group_labels(r, k), list(r.channels)]
                for k, start in self.firing()]

    def dump(self) -> list[Any]:
        return [[k, v] for k, v in self.groups.items()]

    def dump_dirty(self) -> list[Any]:
        """The touched groups as [key, group | None (gone)]; forgets them."""
        groups = self.groups
        out = [[k, groups.get(k)] for k in self.dirty]
        self.dirty = set()
        return out

    def load(self, rows: list[Any], wm: int, mend: bool = False) -> None:
        """Groups of a snapshot; ``mend``: it was written before ``ENDS_VERSION`` (aggregates)."""
        for k, v in rows:
            self.groups[tuple(k) if isinstance(k, list) else k] = v
        self.reschedule(wm)

    def reschedule(self, wm: int) -> None:
        raise NotImplementedError


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


class ForwardState(RuleState):
    """A rule whose groups span devices, in a per-partition engine: it keeps no state here and
    forwards each selected event with its group key to the repartition stage."""

    __slots__ = ()
    kind = "forward"

    def on_event(self, d: dict[str, Any], ts: int, ingest: int | None) -> None:
        key = self.key(d)
        if key is not None:
            self.ctx.forwarded.append((self.rule, key, ts, ingest, d))

    def on_timer(self, due: int) -> None:
        return None

    def firing(self) -> Iterable[tuple[Any, int]]:
        return ()

    def load(self, rows: list[Any], wm: int, mend: bool = False) -> None:
        return None  # state of a per-partition evaluation before the repartition stage: retired

    def reschedule(self, wm: int) -> None:
        return None


_STATES: dict[str, type[RuleState]] = {
    "threshold": ThresholdState, "aggregate": AggregateState, "absence": AbsenceState,
}


class Partition:
    """All event-time state of one partition. Feed ``offer``; read ``take_alerts``/``take_gaps``."""

    def __init__(self, engine: Engine, partition: int) -> None:
        self.engine = engine
        self.partition = partition
        self.lateness = engine.settings.lateness_ms
        self.ctx = _Ctx(engine.settings, engine.clock)
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

    def take_gaps(self) -> list[dict[str, Any]]:
        out = self.gaps_out
        self.gaps_out = []
        return out

    @property
    def held_count(self) -> int:
        return sum(
            len(d[1])
            for gen in (self.devices, self.old_devices)
            for d in gen.values()
            if d.__class__ is list and d[1]
        )

    def group_count(self) -> int:
        return sum(len(st.groups) for st in self.states.values())

    # --- snapshot ---
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
        self.ctx.heap = []
        for name, firing in load_rules(self.states, body["rules"], self.wm):
            self._retire_saved(name, firing)
        self.counts.update(body.get("counts", {}))
        skip = ("v", "maxTs", "wm", "devices", "oldDevices", "rules", "counts", "rotateAt")
        return {k: v for k, v in body.items() if k not in skip}


def load_rules(
    states: Mapping[str, RuleState], saved: Mapping[str, Any], wm: int
) -> list[tuple[str, list[Any]]]:
    """Load each rule's saved groups where its fingerprint is unchanged (``rules_snapshot``'s
    format); return (rule, firing rows) of the saved rules that changed, went away or are now
    forwarded: their episodes are to be retired."""
    for name, st in states.items():
        st.groups.clear()
        st.due_groups.clear()
        rule = saved.get(name)
        if rule is not None and rule["fp"] == st.rule.fingerprint:
            st.load(rule["groups"], wm, mend=rule.get("ends") != ENDS_VERSION)
    retire = []
    for name, rule in saved.items():
        current = states.get(name)
        if current is None or rule["fp"] != current.rule.fingerprint or current.kind == "forward":
            retire.append((name, rule.get("firing", [])))
    return retire


def rules_snapshot(states: Mapping[str, RuleState]) -> dict[str, Any]:
    """Each rule's part of a full snapshot: its fingerprint, groups and firing episodes."""
    return {n: {"fp": st.rule.fingerprint, "groups": st.dump(), "firing": st.firing_summary(),
                "ends": ENDS_VERSION} for n, st in states.items()}


def retired_alerts(
    s: EngineSettings, clock: Callable[[], float], wm: int, rule: str, firing: list[Any]
) -> list[dict[str, Any]]:
    """The `resolved` alerts of a rule that changed or went away while no process ran, for the
    episodes a snapshot says it fired (``firing_summary`` rows), ended at the watermark."""
    at = wm if wm > _NEG else 0
    out = []
    for group, start, severity, labels, channels in firing:
        end = max(at, start)
        out.append({
            "id": alert_id(s.tenant, s.pipeline, rule, group, start), "status": "resolved",
            "tenant": s.tenant, "pipeline": s.pipeline, "rule": rule, "severity": severity,
            "groupKey": group, "labels": labels, "annotations": {},
            "values": {"reason": "rule changed or removed"}, "channels": channels,
            "startsAtMs": start, "endsAtMs": end, "eventTimeMs": end, "ingestTimeMs": None,
            "processedAtMs": int(clock() * 1000), "revision": s.revision,
        })
    return out


_MIN_DELTA_BUDGET = 1 << 20  # deltas may add up to this much even when the full snapshot is smaller


def _dump_device(dev: str, s: Any) -> list[Any]:
    if s.__class__ is int:
        return [dev, s, None, None]
    return [dev, s[0], [[q, t, i, d] for q, (t, i, d) in s[1].items()] if s[1] else None, s[2]]


def _dump_devices(devices: dict[str, Any]) -> list[Any]:
    return [_dump_device(dev, s) for dev, s in devices.items()]


def _group_key(k: Any) -> Any:
    return tuple(k) if k.__class__ is list else k


def _merge_deltas(body: dict[str, Any], deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """A snapshot body with its deltas applied in order (the body of the state they describe)."""
    gens: list[dict[str, list[Any]]] = [
        {row[0]: row for row in body["devices"]},
        {row[0]: row for row in body.get("oldDevices", [])},
    ]
    groups = {n: {_group_key(k): v for k, v in r["groups"]} for n, r in body["rules"].items()}
    for delta in deltas:
        for row in delta["devices"]:
            gen, dev = row[0], row[1]  # [generation (-1: forgotten), device, next seq, pending, gaps]
            gens[0].pop(dev, None)
            gens[1].pop(dev, None)
            if gen >= 0:
                gens[gen][dev] = row[1:]
        for name, r in delta["rules"].items():
            g = groups.get(name)
            if g is None:
                continue  # the rule set of a delta chain is its snapshot's
            for k, v in r["groups"]:
                if v is None:
                    g.pop(_group_key(k), None)
                else:
                    g[_group_key(k)] = v
            body["rules"][name]["firing"] = r["firing"]
        for field in ("maxTs", "wm", "rotateAt", "counts"):
            body[field] = delta[field]
        body.update({k: v for k, v in delta.items() if k not in ("delta", "devices", "rules")})
    body["devices"] = list(gens[0].values())
    body["oldDevices"] = list(gens[1].values())
    for name, g in groups.items():
        body["rules"][name]["groups"] = [[k, v] for k, v in g.items()]
    return body


class Engine:
    """The compiled rule set plus one ``Partition`` per assigned partition."""

    def __init__(
        self,
        settings: EngineSettings,
        rules: Sequence[CompiledRule] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
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
