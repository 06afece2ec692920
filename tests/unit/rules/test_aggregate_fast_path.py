"""The aggregate fast path (one-pane groups neither pending nor firing) gives exactly what the
generic window evaluation gives: a differential property test over sparse and dense streams."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertpipe.workers.rules.engine import AggregateState

from .helpers import comparable, ev, rule, run

pytestmark = pytest.mark.unit

RULES = [
    rule(f"{fn}-{i}", select={"types": ["cpu"]},
         aggregate={"fn": fn, "window": window, "every": every, "condition": cond,
                    **({} if fn == "count" else {"field": "value"})}, **extra)
    for i, (fn, window, every, cond, extra) in enumerate([
        ("count", "6s", "2s", "value >= 2.0", {}),
        ("count", "6s", "2s", "value < 2.0", {}),  # holds on an empty window
        ("sum", "4s", "1s", "value > 120.0", {}),
        ("avg", "6s", "2s", "value > 60.0", {}),
        ("avg", "6s", "2s", "value > 40.0", {"for": "4s"}),
        ("min", "3s", "3s", "!(value > 20.0)", {}),  # a missing value makes it hold: empty windows
        ("max", "6s", "3s", "value > 90.0", {}),
        ("p90", "4s", "2s", "value > 80.0", {}),
    ])
]


def _generic_on_timer(self: AggregateState, due: int) -> None:
    """The engine's window evaluation without the fast path (what it was before it)."""
    for key in self._due(due):
        g = self.groups.get(key)
        if g is not None and g.due == due:
            self._evaluate(key, g, due)


@st.composite
def streams(draw: Any) -> list[dict[str, Any]]:
    """Devices with few events far apart (one pane per group) or bursts (several panes)."""
    events = []
    for d in range(draw(st.integers(1, 12))):
        t = draw(st.integers(0, 20_000))
        for seq in range(draw(st.integers(1, 8))):
            t += draw(st.sampled_from([0, 300, 1500, 7000, 25_000]))
            events.append(ev(f"d{d}", seq, t / 1000, value=draw(st.integers(0, 100))))
    events.sort(key=lambda e: (e["ts"], e["deviceId"], e["seq"]))
    return events


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_fast_path_gives_the_generic_result(events: list[dict[str, Any]]) -> None:
    fast, part = run(RULES, events)
    fast_groups = part.group_count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AggregateState, "on_timer", _generic_on_timer)
        generic, gpart = run(RULES, events)
        assert part.snapshot() == gpart.snapshot()
    assert comparable(fast) == comparable(generic)
    assert fast_groups == gpart.group_count()


def test_a_condition_true_on_an_empty_window_still_fires_for_an_emptied_group() -> None:
    (r,) = [x for x in RULES if x.name == "count-1"]
    alerts, _ = run([r], [ev("d1", 0, 0, value=1), ev("d1", 1, 0.5, value=1), ev("d2", 0, 30, value=1)])
    # d1's window holds 2 events (no alert), then empties: count 0 < 2 fires
    assert [(a["groupKey"], a["status"]) for a in alerts] == [("deviceId=d1", "firing")]
