"""The reference evaluator itself, on hand-computed cases from docs/rules.md and the bug reports:
it is the yardstick of the differential test, so it gets vectors of its own."""

from __future__ import annotations

from typing import Any

import pytest

from alertpipe.workers.rules import CompiledRule
from tests.reference.evaluator import Transition, evaluate
from tests.reference.pipeline import END

from .helpers import T0, ev, rule

pytestmark = pytest.mark.unit

S = 1000


def ref(r: CompiledRule, events: list[dict[str, Any]], lateness_ms: int = 5000) -> list[tuple[str, int]]:
    """(status, seconds after T0) of each transition, one partition."""
    out = evaluate([r], [(0, e) for e in events], lateness_ms=lateness_ms, final_wm=END)
    return [(t.status, (t.at - T0) // S) for t in out]


def test_a_sliding_window_is_tested_where_its_oldest_pane_leaves() -> None:
    r = rule("s", aggregate={"fn": "avg", "field": "value", "window": "30s", "every": "10s",
                             "condition": "value > 40.0"})
    events = [ev("d1", 0, 5, value=0), ev("d1", 1, 15, value=100), ev("d1", 2, 25, value=0),
              ev("d1", 3, 75, value=0)]
    # ends: 10s avg 0, 20s 50, 30s 33.3, 40s 50 (the 0 left), 50s 0
    assert ref(r, events) == [("firing", 20), ("firing", 40), ("resolved", 30), ("resolved", 50)]


def test_an_empty_tumbling_window_resolves() -> None:
    r = rule("t", aggregate={"fn": "avg", "field": "value", "window": "1m", "condition": "value > 75.0"})
    assert ref(r, [ev("d1", 0, 0, value=80), ev("d1", 1, 130, value=80)]) == [
        ("firing", 60), ("firing", 180), ("resolved", 120), ("resolved", 240)]


def test_a_condition_holding_on_an_empty_window_fires_there_and_stays() -> None:
    r = rule("c", aggregate={"fn": "count", "window": "10s", "condition": "value < 2"}, **{"for": "10s"})
    # 10s: count 1 holds (pending), 20s: empty, held for 10s -> fires; nothing resolves it
    assert ref(r, [ev("d1", 0, 1)]) == [("firing", 20)]
    # 10s: count 2 does not hold; 20s, 30s: empty windows hold -> fires at 30s
    assert ref(r, [ev("d1", 0, 1), ev("d1", 1, 2)]) == [("firing", 30)]


def test_count_in_a_condition_and_the_value_and_count_reported() -> None:
    r = rule("f", aggregate={"fn": "max", "field": "value", "window": "10s",
                             "condition": "value > 50.0 && count >= 2"})
    out = evaluate([r], [(0, e) for e in [ev("d1", 0, 1, value=90), ev("d1", 1, 12, value=60),
                                          ev("d1", 2, 13, value=10), ev("d1", 3, 25, value=99)]],
                   lateness_ms=5000, final_wm=END)
    assert out == [Transition("f", "deviceId=d1", "firing", T0 + 20 * S, T0 + 20 * S, 60.0, 2),
                   Transition("f", "deviceId=d1", "resolved", T0 + 30 * S, T0 + 20 * S, 99.0, 1)]


def test_a_bounds_reading_condition_is_asked_only_while_the_group_lives() -> None:
    r = rule("b", aggregate={"fn": "count", "window": "2s",
                             "condition": "value >= 1 && windowEnd % 6000 == 0"})
    # the window ending at 6s holds the event at 4.5s; 8s is the first empty one (resolves)
    assert ref(r, [ev("d1", 0, 1), ev("d1", 1, 4.5)]) == [("firing", 6), ("resolved", 8)]


def test_threshold_for_needs_the_run_to_last() -> None:
    r = rule("h", threshold={"condition": "value > 50"}, **{"for": "10s"})
    short = [ev("d1", 0, 0, value=60), ev("d1", 1, 5, value=70), ev("d1", 2, 9, value=10)]
    assert ref(r, short) == []
    long = [ev("d1", 0, 0, value=60), ev("d1", 1, 5, value=70), ev("d1", 2, 10, value=10)]
    assert ref(r, long) == [("firing", 10), ("resolved", 10)]
    assert ref(r, [ev("d1", 0, 0, value=60)]) == [("firing", 10)]  # the watermark passes at the end


def test_absence_fires_after_the_silence_and_resolves_at_the_next_event() -> None:
    r = rule("a", absence={"for": "10s"})
    assert ref(r, [ev("d1", 0, 0), ev("d1", 1, 5), ev("d1", 2, 30)]) == [
        ("firing", 15), ("firing", 40), ("resolved", 30)]


def test_late_and_duplicate_events_are_not_evaluated() -> None:
    r = rule("h", threshold={"condition": "value > 50"})
    events = [ev("d1", 0, 0, value=10), ev("d1", 5, 20, value=10), ev("d1", 1, 2, value=90),  # late
              ev("d1", 5, 20, value=99)]  # a duplicate of seq 5
    assert ref(r, events, lateness_ms=5000) == []
