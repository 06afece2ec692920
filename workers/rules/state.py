"""What every rule kind shares: the engine settings, the context a partition gives its rule states
(output, timers, clock), group keys and their text, and ``RuleState``, the base of the per-kind
states (threshold.py, aggregate.py, absence.py, forward.py). No I/O."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from alertpipe.workers.alerts import alert_id
from alertpipe.workers.pii import PiiPolicy
from alertpipe.workers.rules.cel import CelProgram
from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.lookups import NO_LOOKUPS, LookupView
from alertpipe.workers.rules.templates import render_value

__all__ = ["ACCEPTED", "DUPLICATE", "LATE", "EngineSettings", "RuleState"]

ACCEPTED = 0  # released or waiting in the reorder buffer: it will be evaluated
DUPLICATE = 1  # a seq this device already released or holds
LATE = 2  # older than the watermark

_NEG = -(2**62)
_FAR = 2**62


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
    pii: PiiPolicy | None = None  # the pipeline's spec.pii: what alerts must not show


class _Ctx:
    """What rule states need from their partition: settings, output, timers, clock."""

    __slots__ = ("settings", "out", "heap", "counter", "clock", "fired", "resolved", "forwarded", "lookups")

    def __init__(self, settings: EngineSettings, clock: Callable[[], float],
                 lookups: LookupView = NO_LOOKUPS) -> None:
        self.settings = settings
        self.lookups = lookups  # where lookup() reads rows: filled by the engine's owner, never fetched here
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


def _bound(prog: CelProgram | None, ctx: _Ctx) -> Callable[..., bool] | None:
    """The program's function; one that reads lookup tables gets the partition's LookupView."""
    if prog is None:
        return None
    fn = prog.fn
    if not prog.lookups:
        return fn
    view = ctx.lookups
    return lambda d: fn(d, view)


class RuleState:
    """Per-partition state of one rule; subclasses per kind."""

    __slots__ = ("rule", "ctx", "groups", "key", "flt", "cond", "name", "due_groups", "dirty")

    kind = ""

    def __init__(self, rule: CompiledRule, ctx: _Ctx) -> None:
        self.rule = rule
        self.ctx = ctx
        self.groups: dict[Any, Any] = {}  # group key -> the kind's group record
        self.key = _key_fn(rule)
        self.flt = _bound(rule.filter, ctx)
        self.cond = _bound(rule.condition, ctx)
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
        alert = {
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
        }
        if s.pii is not None:
            s.pii.apply(alert, rule, key, ctx_all)
        ctx.out.append(alert)
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
