"""Property tests: arrival order within the lateness bound, duplicates and checkpoint cuts never
change the alerts; gaps never block later events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import comparable, engine, ev, feed, rule, run

pytestmark = pytest.mark.unit

LATENESS = 5000
RULES = [
    rule("hot", select={"types": ["cpu"]}, threshold={"condition": "value > 70"}),
    rule("hot-for", select={"types": ["cpu"]}, threshold={"condition": "value > 50"}, **{"for": "4s"}),
    rule(
        "avg",
        select={"types": ["cpu"]},
        aggregate={"fn": "avg", "field": "value", "window": "6s", "every": "2s", "condition": "value > 50.0"},
    ),
    rule(
        "p95",
        select={"types": ["cpu"]},
        aggregate={"fn": "p95", "field": "value", "window": "5s", "condition": "value > 80.0"},
    ),
    rule("count", aggregate={"fn": "count", "window": "4s", "condition": "value >= 3.0"}),
    rule("silent", absence={"for": "7s"}),
]


@st.composite
def streams(draw: Any) -> list[dict[str, Any]]:
    """An ordered stream: a few devices, increasing seq and time per device, values 0..100."""
    n_dev = draw(st.integers(1, 4))
    events = []
    for d in range(n_dev):
        t = draw(st.integers(0, 3000))
        for seq in range(draw(st.integers(1, 25))):
            t += draw(st.integers(0, 2500))
            events.append(ev(f"d{d}", seq, t / 1000, value=draw(st.integers(0, 100))))
    events.sort(key=lambda e: (e["ts"], e["deviceId"], e["seq"]))
    return events


def shuffle_within_lateness(events: list[dict[str, Any]], delays: list[int]) -> list[dict[str, Any]]:
    """Arrival order = event time + a delay below the lateness bound: nothing arrives late."""
    keyed = sorted(range(len(events)), key=lambda i: (events[i]["ts"] + delays[i % len(delays)], i))
    return [events[i] for i in keyed]


settings.register_profile(
    "engine", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("engine")


@given(streams(), st.lists(st.integers(0, LATENESS - 1), min_size=1, max_size=50))
def test_any_order_within_lateness_gives_the_same_alerts(
    events: list[dict[str, Any]], delays: list[int]
) -> None:
    expected, _ = run(RULES, events, LATENESS)
    got, part = run(RULES, shuffle_within_lateness(events, delays), LATENESS)
    assert comparable(got) == comparable(expected)
    assert part.counts["late"] == 0 and part.counts["gaps"] == 0


@given(streams(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=30))
def test_duplicates_never_change_the_result(
    events: list[dict[str, Any]], dups: list[tuple[int, int]]
) -> None:
    expected, _ = run(RULES, events, LATENESS)
    stream = list(events)
    for src, pos in dups:
        original = events[src % len(events)]
        after = next(i for i, e in enumerate(stream) if e is original) + 1  # a copy comes after it
        stream.insert(after + pos % (len(stream) + 1 - after), dict(original))
    got, part = run(RULES, stream, LATENESS)
    assert comparable(got) == comparable(expected)
    # every extra copy is accounted for as a duplicate or (when it comes after the watermark) late
    assert part.counts["duplicate"] + part.counts["late"] == len(dups)


@given(streams(), st.integers(0, 10_000))
def test_checkpoint_anywhere_then_restore_gives_the_same_alerts(
    events: list[dict[str, Any]], cut: int
) -> None:
    expected, _ = run(RULES, events, LATENESS)
    cut %= len(events) + 1
    part = engine(*RULES, lateness_ms=LATENESS).partition(0)
    feed(part, events[:cut])
    before = part.take_alerts()
    restored = engine(*RULES, lateness_ms=LATENESS).partition(0)
    restored.restore(part.snapshot())
    feed(restored, events[cut:])
    restored.flush()
    assert comparable(before + restored.take_alerts()) == comparable(expected)


@given(streams(), st.sets(st.integers(0, 10_000), max_size=10))
def test_gaps_are_recorded_and_never_block(events: list[dict[str, Any]], drop: set[int]) -> None:
    kept = [e for i, e in enumerate(events) if i % max(len(events), 1) not in {d % len(events) for d in drop}]
    _, part = run(RULES, kept, LATENESS)
    assert part.counts["released"] == len(kept)  # every kept event was evaluated
    assert part.held_count == 0
    missing_inside = 0
    by_dev: dict[str, list[int]] = {}
    for e in kept:
        by_dev.setdefault(e["deviceId"], []).append(e["seq"])
    for seqs in by_dev.values():
        seqs.sort()
        missing_inside += sum(b - a - 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert part.counts["gap_seqs"] == missing_inside


def waiting(part: Any) -> int:
    """Events waiting in reorder buffers, counted the slow way (the reorder state itself)."""
    return sum(len(d[1]) for gen in (part.devices, part.old_devices) for d in gen.values()
               if d.__class__ is list and d[1])


@given(streams(), st.lists(st.integers(0, LATENESS - 1), min_size=1, max_size=50),
       st.sets(st.integers(0, 10_000), max_size=6), st.integers(0, 200))
def test_held_count_is_the_events_waiting_at_any_point(
    events: list[dict[str, Any]], delays: list[int], drop: set[int], cut: int
) -> None:
    """The evaluator's reorder gauge: not the heap's length, which keeps entries released early."""
    stream = [e for i, e in enumerate(shuffle_within_lateness(events, delays))
              if i not in {d % max(len(events), 1) for d in drop}]
    part = engine(*RULES, lateness_ms=LATENESS).partition(0)
    for i, e in enumerate(stream):
        part.offer(e, e["deviceId"], e["seq"], e["ts"])
        assert part.held_count == waiting(part)
        if i == cut:
            restored = engine(*RULES, lateness_ms=LATENESS).partition(0)
            restored.restore(part.snapshot())
            part = restored
            assert part.held_count == waiting(part)
    part.flush()
    assert part.held_count == waiting(part) == 0
