"""A reference evaluator: the rule semantics of docs/rules.md computed the slow, obvious way.

Deliberately naive and independent of the engine: it keeps every accepted event, recomputes every
window end from scratch, and reads each group's events start to end. It shares only the compiled
rule with the engine (names, durations, group-key paths, CEL programs: the expression language has
its own differential test). The differential property test holds the engine to it; where the two
disagree, this file says what the docs promise.

What it models, from the docs:

* **Acceptance** (per events partition): watermark = max event time accepted so far − allowed
  lateness; an event older than it is late; a (deviceId, seq) accepted before is a duplicate.
  Neither is evaluated. Everything else is, once: at the end the watermark passes everything.
* **Order**: a device's events in seq order (the generators make seq and time increase together);
  a group that spans devices in (event time, deviceId, seq) order.
* **lookups**: ``lookup()`` reads a fixed set of rows (a row absent: the missing value).
* **threshold**: each maximal run of events that satisfy the condition, starting at t0, fires at
  t0 + ``for`` if the run lasts that long (the next event that does not satisfy it comes at or
  after t0 + for, or none comes); the alert resolves at that next event.
* **aggregate**: windows of ``window`` ending at every multiple of ``every`` since the epoch; from
  the first window that holds the group's first event, every window end is tested on the values
  in ``[end − window, end)`` (an empty window: count 0, other functions missing). The condition
  holding ``for`` (window ends ``for`` apart) fires at that end; a window end where it does not
  hold resolves.
* **absence**: fires at last seen + ``for`` when no event of the group came in that time; the next
  event resolves it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alertpipe.workers.rules import CompiledRule
from alertpipe.workers.rules.cel import MISSING
from alertpipe.workers.rules.lookups import NO_LOOKUPS, LookupView
from alertpipe.workers.rules.templates import render_value

QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True, order=True)
class Transition:
    """One alert transition, as the engine's alert message carries it."""

    rule: str
    group: str
    status: str
    at: int
    start: int
    value: float | None = None  # aggregate: the window's value (rounded), or None when missing
    count: int | None = None  # aggregate: how many values the window held


def transition(alert: dict[str, Any], kind: str) -> Transition:
    """The engine's alert message as a Transition (what the comparison looks at)."""
    value = count = None
    if kind == "aggregate":
        v = alert["values"]["value"]
        value = None if v is None else round(float(v), 9)
        count = alert["values"]["count"]
    return Transition(alert["rule"], alert["groupKey"], alert["status"], alert["eventTimeMs"],
                      alert["startsAtMs"], value, count)


# --- acceptance -----------------------------------------------------------------------------------


def accepted(arrivals: Iterable[tuple[int, dict[str, Any]]], lateness_ms: int) -> list[dict[str, Any]]:
    """The events that are evaluated, from (partition, event) pairs in arrival order."""
    max_ts: dict[int, int] = {}
    seen: set[tuple[str, int]] = set()
    out = []
    for p, e in arrivals:
        if p in max_ts and e["ts"] < max_ts[p] - lateness_ms:
            continue  # late
        key = (e["deviceId"], e["seq"])
        if key in seen:
            continue  # duplicate
        seen.add(key)
        out.append(e)
        max_ts[p] = max(max_ts.get(p, e["ts"]), e["ts"])
    return out


# --- selection and groups -------------------------------------------------------------------------


def _path(e: dict[str, Any], path: Sequence[str]) -> Any:
    cur: Any = e
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | float | bool) and v == v


def group_key(rule: CompiledRule, e: dict[str, Any]) -> str | None:
    """The group's text (``deviceId=d1``, ``region=eu,type=cpu``); None: the rule skips the event."""
    parts = []
    for name, path in zip(rule.by_names, rule.by, strict=True):
        v = _path(e, path)
        if not _scalar(v):
            return None
        parts.append(f"{name}={render_value(v)}")
    return ",".join(parts)


def aggregated_value(rule: CompiledRule, e: dict[str, Any]) -> float | int | None:
    """The number an aggregate rule takes from the event; None: the rule skips it."""
    if rule.fn == "count":
        return 1
    v = _path(e, rule.field or ())
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        return None
    return v


def groups(rule: CompiledRule, events: Iterable[dict[str, Any]],
           lookups: LookupView = NO_LOOKUPS) -> dict[str, list[dict[str, Any]]]:
    """The rule's selected events per group, in the order the group sees them."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if rule.types and e.get("type") not in rule.types:
            continue
        if rule.filter is not None and not rule.filter(e, lookups):
            continue
        if rule.kind == "aggregate" and aggregated_value(rule, e) is None:
            continue
        k = group_key(rule, e)
        if k is not None:
            out.setdefault(k, []).append(e)
    for evs in out.values():
        evs.sort(key=lambda e: (e["ts"], e["deviceId"], e["seq"]))
    return out


# --- the three kinds ------------------------------------------------------------------------------


def threshold(rule: CompiledRule, group: str, evs: list[dict[str, Any]],
              lookups: LookupView = NO_LOOKUPS) -> list[Transition]:
    assert rule.condition is not None
    out = []
    i = 0
    while i < len(evs):
        if not rule.condition(evs[i], lookups):
            i += 1
            continue
        t0 = evs[i]["ts"]
        j = i
        while j < len(evs) and rule.condition(evs[j], lookups):
            j += 1
        ends_at = evs[j]["ts"] if j < len(evs) else None  # the first event that does not hold
        fire_at = t0 + rule.for_ms
        if rule.for_ms == 0 or ends_at is None or ends_at >= fire_at:
            out.append(Transition(rule.name, group, "firing", fire_at, fire_at))
            if ends_at is not None:
                out.append(Transition(rule.name, group, "resolved", ends_at, fire_at))
        i = j
    return out


def window_value(fn: str, values: list[float | int]) -> Any:
    if fn == "count":
        return len(values)
    if not values:
        return MISSING
    if fn == "sum":
        return math.fsum(values)
    if fn == "avg":
        return math.fsum(values) / len(values)
    if fn == "min":
        return min(values)
    if fn == "max":
        return max(values)
    ordered = sorted(values)  # nearest rank: the smallest value with at least q of them at or below
    return ordered[max(0, math.ceil(QUANTILES[fn] * len(ordered)) - 1)]


def aggregate(rule: CompiledRule, group: str, evs: list[dict[str, Any]], final_wm: int) -> list[Transition]:
    """Window ends are tested while the group lives: its window holds values, its values just
    left (the first empty window after them), or it fires or is pending. Elsewhere the window is
    empty and a condition that does not read the window's bounds gives what it gave at the first
    empty one; one that reads them is not asked (docs/rules.md)."""
    assert rule.condition is not None and rule.fn is not None
    every, window = rule.every_ms, rule.window_ms
    reads_bounds = bool(rule.condition.names & {"windowStart", "windowEnd"})
    points = [(e["ts"], aggregated_value(rule, e)) for e in evs]
    end = (points[0][0] // every + 1) * every  # the first window that holds the first event
    all_left = (points[-1][0] // every + 1) * every + window  # from here on every window is empty
    out = []
    pending: int | None = None
    firing: int | None = None
    held_before = False
    while end <= final_wm:
        values = [v for t, v in points if end - window <= t < end and v is not None]
        live = bool(values) or held_before or firing is not None or pending is not None
        held_before = bool(values)
        if live:
            value = window_value(rule.fn, values)
            shown = None if value is MISSING else round(float(value), 9)
            if rule.condition(value, len(values), end - window, end):
                if firing is None:
                    pending = end if pending is None else pending
                    if end - pending >= rule.for_ms:
                        firing = end
                        out.append(Transition(rule.name, group, "firing", end, end, shown, len(values)))
            else:
                pending = None
                if firing is not None:
                    out.append(Transition(rule.name, group, "resolved", end, firing, shown, len(values)))
                    firing = None
        waiting = pending is not None and firing is None  # a `for` still counts
        if end >= all_left and not waiting and (firing is None or not reads_bounds):
            break  # empty windows from here on: nothing can change any more
        end += every
    return out


def absence(rule: CompiledRule, group: str, evs: list[dict[str, Any]], final_wm: int) -> list[Transition]:
    out = []
    last = evs[0]["ts"]
    for e in evs[1:]:
        if e["ts"] <= last:
            continue
        if e["ts"] - last >= rule.absence_ms:
            at = last + rule.absence_ms
            out.append(Transition(rule.name, group, "firing", at, at))
            out.append(Transition(rule.name, group, "resolved", e["ts"], at))
        last = e["ts"]
    if last + rule.absence_ms <= final_wm:
        at = last + rule.absence_ms
        out.append(Transition(rule.name, group, "firing", at, at))
    return out


def evaluate(rules: Sequence[CompiledRule], arrivals: Sequence[tuple[int, dict[str, Any]]], *,
             lateness_ms: int, final_wm: int, lookups: LookupView = NO_LOOKUPS) -> list[Transition]:
    """Every transition the rules must produce for this arrival sequence, sorted; ``lookups``: the
    rows ``lookup()`` reads (fixed for the run)."""
    events = accepted(arrivals, lateness_ms)
    out: list[Transition] = []
    for rule in rules:
        for group, evs in groups(rule, events, lookups).items():
            if rule.kind == "threshold":
                out += threshold(rule, group, evs, lookups)
            elif rule.kind == "aggregate":
                out += aggregate(rule, group, evs, final_wm)
            else:
                out += absence(rule, group, evs, final_wm)
    return sorted(out)
