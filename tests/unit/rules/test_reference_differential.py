"""The engine against the reference evaluator (tests/reference): generated rules and streams, with
duplicates, reorder within the lateness bound, truly late events, sequence gaps, clock skew,
several devices per partition and idle partitions, checkpoint restores in both stages, lookup
tables in filters and threshold conditions. The
engine's transitions must equal the reference's, value and count included."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertpipe.workers.rules import CompiledRule
from alertpipe.workers.rules.lookups import LookupTables
from tests.reference.evaluator import evaluate, transition
from tests.reference.pipeline import END, run_engine

from .helpers import T0, rule

pytestmark = pytest.mark.unit

SITES = ["berlin", "paris", "rome"]
AGG_CONDITIONS = {
    "count": ["value >= 3", "value < 2", "value >= 2 && windowEnd % 4000 == 0"],
    "other": ["value > {x}", "value < {x}", "value > {x} && count >= 2", "!(value > {x})", "count < 2"],
}
WINDOWS = [("2s", None), ("3s", None), ("4s", "1s"), ("6s", "2s"), ("5s", "1s"), ("1s", None)]


@st.composite
def rules(draw: Any) -> list[CompiledRule]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["threshold", "aggregate", "aggregate", "absence"]))
        spec: dict[str, Any] = {"by": draw(st.sampled_from([["deviceId"], ["site"], ["site", "region"]]))}
        if draw(st.booleans()):
            spec["select"] = {"types": ["cpu"]}
        roll = draw(st.integers(0, 5))
        if roll == 0:
            spec.setdefault("select", {})["filter"] = "region == 'eu'"
        elif roll == 1:  # a lookup table decides which events the rule selects
            spec.setdefault("select", {})["filter"] = "!(lookup('muted', site).on == true)"
        if kind == "threshold" and spec["by"] == ["deviceId"] and draw(st.booleans()):
            spec["threshold"] = {"condition": "value > lookup('limits', deviceId).max"}  # per-device limit
            spec["for"] = draw(st.sampled_from(["0s", "2s"]))
        elif kind == "threshold":
            spec["threshold"] = {"condition": f"value > {draw(st.integers(20, 80))}"}
            spec["for"] = draw(st.sampled_from(["0s", "0s", "2s", "5s"]))
        elif kind == "aggregate":
            fn = draw(st.sampled_from(["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"]))
            window, every = draw(st.sampled_from(WINDOWS))
            x = draw(st.integers(10, 90)) * (10 if fn == "sum" else 1)
            cond = draw(st.sampled_from(AGG_CONDITIONS["count" if fn == "count" else "other"]))
            agg = {"fn": fn, "window": window, "condition": cond.format(x=f"{x}.0")}
            if fn != "count":
                agg["field"] = "value"
            if every:
                agg["every"] = every
            spec["aggregate"] = agg
            if draw(st.integers(0, 3)) == 0:
                spec["for"] = every or window
        else:
            spec["absence"] = {"for": draw(st.sampled_from(["3s", "7s"]))}
        out.append(rule(f"r{i}-{kind}", **spec))
    return out


@st.composite
def arrivals(draw: Any) -> tuple[list[tuple[int, dict[str, Any]]], int, int]:
    """(partition, event) in arrival order, the partition count and the lateness."""
    lateness = draw(st.sampled_from([2000, 5000]))
    upstreams = draw(st.integers(1, 4))
    sent: list[tuple[int, int, int, dict[str, Any]]] = []  # (arrival, tiebreak, partition, event)
    for d in range(draw(st.integers(1, 6))):
        dev = f"d{d}"
        part = zlib.crc32(dev.encode()) % upstreams
        site = draw(st.sampled_from(SITES))
        skew = draw(st.sampled_from([0, 0, 0, 3000, -2000]))  # this device's clock is off
        t = draw(st.integers(0, 6000))  # not aligned to any window
        for seq in range(draw(st.integers(1, 18))):
            t += draw(st.integers(1, 3500))  # strictly increasing time per device, with seq
            if draw(st.integers(0, 9)) == 0:
                continue  # never sent: a gap
            e = {"tenant": "acme", "deviceId": dev, "seq": seq, "ts": T0 + t + skew,
                 "type": draw(st.sampled_from(["cpu", "cpu", "mem"])), "site": site,
                 "region": draw(st.sampled_from(["eu", "eu", "us"])),
                 "value": draw(st.integers(0, 200)) / 2}
            if draw(st.integers(0, 15)) == 0:
                del e["value"]  # a missing field: aggregates skip it, comparisons are false
            roll = draw(st.integers(0, 19))
            delay = draw(st.integers(0, lateness - 1)) if roll else draw(st.integers(lateness, 3 * lateness))
            sent.append((t + delay, len(sent), part, e))
            if draw(st.integers(0, 7)) == 0:  # a duplicate, arriving later
                sent.append((t + delay + draw(st.integers(0, 2 * lateness)), len(sent), part, dict(e)))
    sent.sort()
    return [(p, e) for _a, _i, p, e in sent], upstreams, lateness


def engine_transitions(rules: list[CompiledRule], alerts: list[dict[str, Any]]) -> list[Any]:
    kinds = {r.name: r.kind for r in rules}
    return sorted(transition(a, kinds[a["rule"]]) for a in alerts)


@st.composite
def tables(draw: Any) -> LookupTables:
    """Per-device limits (some devices without a row) and muted sites."""
    limits = {f"d{d}": {"max": draw(st.integers(20, 90))} for d in range(6) if draw(st.booleans())}
    muted = {s: {"on": draw(st.booleans())} for s in SITES if draw(st.booleans())}
    return LookupTables({"limits": limits, "muted": muted})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), arrivals(), st.lists(st.integers(0, 400), max_size=4), st.sampled_from([0, 0, 5, 17]),
       st.integers(0, 3), tables())
def test_engine_equals_the_reference(
    rs: list[CompiledRule], stream: tuple[list[tuple[int, dict[str, Any]]], int, int],
    restores: list[int], stage2_restore_every: int, seed: int, lookups: LookupTables,
) -> None:
    arr, upstreams, lateness = stream
    expected = evaluate(rs, arr, lateness_ms=lateness, final_wm=END, lookups=lookups)
    alerts = run_engine(rs, arr, upstreams=upstreams, lateness_ms=lateness, restore_at=set(restores),
                        stage2_restore_every=stage2_restore_every, seed=seed, lookups=lookups)
    assert engine_transitions(rs, alerts) == expected
