"""The engine's semantics, one table or scenario per rule of docs/rules.md."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from alertpipe.workers.alerts import Alert, alert_id
from alertpipe.workers.rules.engine import ACCEPTED, DUPLICATE, LATE

from .helpers import T0, comparable, engine, ev, feed, rule, run

pytestmark = pytest.mark.unit


def next_seq(part: Any, device: str) -> int:
    dev = part.devices[device]
    return int(dev if isinstance(dev, int) else dev[0])


HOT = rule(
    "hot",
    select={"types": ["cpu"]},
    threshold={"condition": "value > 80"},
    annotations={"summary": "CPU {{ value }} on {{ deviceId }}"},
    labels={"team": "infra"},
    channels=["pager"],
)


def test_threshold_fires_and_resolves_with_deterministic_ids() -> None:
    alerts, _ = run(
        [HOT],
        [
            ev("d1", 0, 0, value=10),
            ev("d1", 1, 1, value=90),
            ev("d1", 2, 2, value=95),
            ev("d1", 3, 3, value=50),
        ],
    )
    assert [(a["status"], a["eventTimeMs"] - T0) for a in alerts] == [("firing", 1000), ("resolved", 3000)]
    fired, resolved = alerts
    assert fired["id"] == resolved["id"] == alert_id("acme", "main", "hot", "deviceId=d1", T0 + 1000)
    assert fired["annotations"] == {"summary": "CPU 90 on d1"}
    assert fired["labels"] == {"team": "infra", "deviceId": "d1"}
    assert fired["values"] == {"value": 90} and resolved["endsAtMs"] == T0 + 3000
    Alert.model_validate(fired)  # the contract the deliverer reads
    assert Alert.model_validate(resolved).status == "resolved"


def test_rules_are_indexed_by_type_and_filtered() -> None:
    mem = rule(
        "mem",
        select={"types": ["mem"], "filter": "host.startsWith('db')"},
        threshold={"condition": "used > 0.9"},
    )
    any_type = rule("any", threshold={"condition": "has(panic)"})
    part = engine(HOT, mem, any_type).partition(0)
    assert [s.name for s in part.index["cpu"]] == ["hot", "any"]
    assert [s.name for s in part.index["mem"]] == ["mem", "any"]
    assert [s.name for s in part.wildcard] == ["any"]
    feed(
        part,
        [
            ev("d1", 0, 0, "mem", host="web1", used=0.99),
            ev("d2", 0, 0, "mem", host="db1", used=0.95),
            ev("d3", 0, 0, "disk", panic=True),
        ],
    )
    part.flush()
    assert sorted((a["rule"], a["groupKey"]) for a in part.take_alerts()) == [
        ("any", "deviceId=d3"),
        ("mem", "deviceId=d2"),
    ]


def test_threshold_for_holds_in_event_time() -> None:
    r = rule("hot", threshold={"condition": "value > 80"}, **{"for": "10s"})
    # true at 0..8 then false: never held 10 s
    alerts, _ = run([r], [ev("d", i, i, value=90 if i < 9 else 1) for i in range(12)])
    assert alerts == []
    # true from 20 on: fires at 30 (by the watermark, no event needed at exactly 30)
    alerts, _ = run([r], [ev("d", i, i * 3, value=90 if i >= 0 else 1) for i in range(14)])
    assert [(a["status"], a["eventTimeMs"] - T0) for a in alerts] == [("firing", 10_000)]
    # the resolving event comes after the hold time even before the watermark passed it
    alerts, _ = run([r], [ev("d", 0, 0, value=90), ev("d", 1, 15, value=1)], lateness_ms=60_000)
    assert [(a["status"], a["eventTimeMs"] - T0) for a in alerts] == [
        ("firing", 10_000),
        ("resolved", 15_000),
    ]


def test_tumbling_count_by_two_fields() -> None:
    r = rule(
        "errs",
        select={"filter": "level == 'error'"},
        by=["deviceId", "route"],
        aggregate={"fn": "count", "window": "10s", "condition": "value >= 3.0"},
    )
    evs = [ev("d", i, i, "log", level="error", route="/a") for i in range(4)]
    evs += [ev("d", 4 + i, 11 + i, "log", level="info", route="/a") for i in range(12)]
    alerts, _ = run([r], evs)
    assert [(a["status"], a["groupKey"], a["eventTimeMs"] - T0, a["values"]["value"]) for a in alerts] == [
        ("firing", "deviceId=d,route=/a", 10_000, 4),
        ("resolved", "deviceId=d,route=/a", 20_000, 0),
    ]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("count", 10),
        ("sum", 55.0),
        ("avg", 5.5),
        ("min", 1),
        ("max", 10),
        ("p50", 5),
        ("p90", 9),
        ("p95", 10),
        ("p99", 10),
    ],
)
def test_aggregate_functions(fn: str, expected: float) -> None:
    spec = {"fn": fn, "window": "1m", "condition": "value > -1.0"}
    if fn != "count":
        spec["field"] = "v"
    r = rule("agg", aggregate=spec)
    evs = [ev("d", i, i, v=i + 1) for i in range(10)] + [ev("d", 10, 70, v=0)]
    alerts, _ = run([r], evs)
    assert alerts[0]["status"] == "firing" and alerts[0]["values"]["value"] == expected


def test_aggregate_skips_non_numeric_values() -> None:
    r = rule("agg", aggregate={"fn": "sum", "field": "v", "window": "10s", "condition": "value > 0.0"})
    alerts, _ = run(
        [r], [ev("d", 0, 1, v="7"), ev("d", 1, 2, v=True), ev("d", 2, 3), ev("d", 3, 4, v=2), ev("d", 4, 30)]
    )
    assert alerts[0]["values"]["value"] == 2 and alerts[0]["values"]["count"] == 1


def test_sliding_window_sees_each_event_in_every_window_it_belongs_to() -> None:
    r = rule("slide", aggregate={"fn": "count", "window": "30s", "every": "10s", "condition": "value >= 1.0"})
    alerts, _ = run([r], [ev("d", 0, 5), ev("d", 1, 100)])
    # the event at 5 s is in the windows ending at 10, 20 and 30: fires at 10, resolves at 40 (empty)
    assert [(a["status"], a["eventTimeMs"] - T0) for a in alerts][:2] == [
        ("firing", 10_000),
        ("resolved", 40_000),
    ]


def test_absence_by_watermark_and_resolution() -> None:
    r = rule("hb", select={"types": ["hb"]}, absence={"for": "30s"})
    evs = [ev("a", 0, 0, "hb"), ev("b", 0, 0, "hb")] + [ev("b", i, i * 10, "hb") for i in range(1, 8)]
    evs.append(ev("a", 1, 75, "hb"))
    alerts, _ = run([r], evs)
    assert [(a["status"], a["groupKey"], a["eventTimeMs"] - T0) for a in alerts] == [
        ("firing", "deviceId=a", 30_000),
        ("resolved", "deviceId=a", 75_000),
    ]


def test_absence_does_not_fire_without_event_time_progress() -> None:
    r = rule("hb", select={"types": ["hb"]}, absence={"for": "30s"})
    part = engine(r).partition(0)
    feed(part, [ev("a", 0, 0, "hb"), ev("a", 1, 10, "hb")])
    part.advance_to(T0 + 39_000)
    assert part.take_alerts() == []
    part.advance_to(T0 + 40_000)  # e.g. the worker's idleness rule
    assert [a["status"] for a in part.take_alerts()] == ["firing"]


def test_late_and_duplicate_verdicts() -> None:
    part = engine(HOT).partition(0)
    assert feed(part, [ev("d", 0, 10, value=1), ev("d", 1, 20, value=1)]) == [ACCEPTED, ACCEPTED]
    assert part.wm == T0 + 15_000
    assert feed(part, [ev("x", 0, 14, value=99)]) == [LATE]  # older than the watermark
    assert feed(part, [ev("d", 1, 20, value=1)]) == [DUPLICATE]  # released already
    assert feed(part, [ev("d", 5, 21, value=1), ev("d", 5, 21, value=1)]) == [ACCEPTED, DUPLICATE]  # held
    assert part.counts["late"] == 1 and part.counts["duplicate"] == 2


def test_reorder_buffer_releases_in_seq_order_and_records_gaps() -> None:
    r = rule("seqs", threshold={"condition": "true"})
    part = engine(r).partition(0)
    feed(part, [ev("d", 1, 10), ev("d", 0, 9)])
    assert next_seq(part, "d") == -1 and part.held_count == 2  # a new device waits the lateness bound
    feed(part, [ev("x", 0, 15)])  # watermark 10 s: d's first events are released in seq order
    assert next_seq(part, "d") == 2 and part.held_count == 1
    feed(part, [ev("d", 2, 11), ev("d", 4, 13), ev("d", 3, 12)])  # 4 waits for 3, then both go
    assert next_seq(part, "d") == 5 and part.counts["gaps"] == 0
    feed(part, [ev("d", 8, 14)])  # 5..7 missing: waits until the watermark passes 14 s
    assert part.held_count == 2
    feed(part, [ev("d", 9, 16), ev("y", 0, 19)])  # watermark 14 s: gap declared, 8 released, 9 follows
    assert next_seq(part, "d") == 10
    assert part.take_gaps() == [
        {
            "deviceId": "d",
            "partition": 0,
            "firstMissingSeq": 5,
            "lastMissingSeq": 7,
            "missing": 3,
            "detectedAtMs": T0 + 14_000,
            "watermarkMs": T0 + 14_000,
        }
    ]
    assert part.counts["gaps"] == 1 and part.counts["gap_seqs"] == 3
    assert feed(part, [ev("d", 6, 15)]) == [LATE]  # a filler of a declared gap is late, not a duplicate
    fired = sorted(a["startsAtMs"] - T0 for a in part.take_alerts())
    assert fired == [9000]  # "true" fires once per device episode; never resolved


def test_hot_reload_keeps_unchanged_rules_and_resolves_changed_ones() -> None:
    eng = engine(HOT)
    part = eng.partition(0)
    feed(part, [ev("d", 0, 0, value=99), ev("e", 0, 0, value=1), ev("e", 1, 10, value=1)])
    assert [a["status"] for a in part.take_alerts()] == ["firing"]
    state = part.states["hot"]
    other = rule("other", threshold={"condition": "value > 1"})
    eng.set_rules([HOT, other])
    assert part.states["hot"] is state  # unchanged: kept, still firing
    feed(part, [ev("d", 1, 11, value=1)])
    assert [a["status"] for a in part.take_alerts()] == ["resolved"]
    feed(part, [ev("d", 2, 12, value=99)])
    part.take_alerts()
    changed = rule("hot", threshold={"condition": "value > 90"})
    eng.set_rules([changed])
    out = part.take_alerts()
    # retired episodes: 'hot' changed, 'other' was removed
    assert sorted((a["rule"], a["status"]) for a in out) == [("hot", "resolved"), ("other", "resolved")]
    assert part.states["hot"] is not state and part.states["hot"].groups == {}


def test_snapshot_restore_round_trip() -> None:
    r = rule(
        "slide",
        aggregate={"fn": "p95", "field": "v", "window": "30s", "every": "10s", "condition": "value > 50.0"},
    )
    evs = [ev(f"d{i % 3}", i // 3, i, v=i * 3) for i in range(40)]
    straight, _ = run([HOT, r], evs)
    eng = engine(HOT, r)
    part = eng.partition(0)
    feed(part, evs[:17])
    first = part.take_alerts()
    blob = part.snapshot(offset=17)
    eng2 = engine(HOT, r)
    p2 = eng2.partition(0)
    assert p2.restore(blob) == {"offset": 17}
    feed(p2, evs[17:])
    p2.flush()
    assert comparable(first + p2.take_alerts()) == comparable(straight)


def test_bad_values_never_crash() -> None:
    r = rule("x", by=["meta"], threshold={"condition": "s.matches('^a+$') || int(s) > 100"})
    alerts, part = run(
        [r],
        [
            ev("d", 0, 0, v=1, s="12", meta={"a": 1}),
            ev("d", 1, 1, v=None, s=[1], meta="m"),
            ev("d", 2, 2, v=1, s="aaa", meta="m"),
        ],
    )
    assert [(a["status"], a["groupKey"]) for a in alerts] == [("firing", "meta=m")]
    # a run-time error anywhere makes the whole condition false (documented)
    r = rule("y", threshold={"condition": "v / 0 > 1 || true"})
    assert run([r], [ev("d", 0, 0, v=1)])[0] == []


def test_silent_devices_are_forgotten_after_two_generations() -> None:
    from alertpipe.workers.rules.engine import Engine, EngineSettings

    r = rule("seqs", threshold={"condition": "value > 1000"})
    part = Engine(EngineSettings("acme", "main", 1000, device_ttl_ms=20_000), [r]).partition(0)
    feed(part, [ev("quiet", 0, 0, value=1), ev("busy", 0, 0, value=1)])
    feed(part, [ev("busy", i, i * 2, value=1) for i in range(1, 8)])  # 14 s: one rotation (at 10 s)
    assert "quiet" in part.old_devices and "quiet" not in part.devices
    feed(part, [ev("busy", i, i * 2, value=1) for i in range(8, 20)])  # 38 s: a second one (at 20 s)
    assert "quiet" not in part.devices and "quiet" not in part.old_devices  # forgotten
    assert next_seq(part, "busy") == 20
    blob = part.snapshot()
    again = Engine(EngineSettings("acme", "main", 1000, device_ttl_ms=20_000), [r]).partition(0)
    again.restore(blob)
    assert (again.devices, again.old_devices, again.rotate_at) == (
        part.devices,
        part.old_devices,
        part.rotate_at,
    )
    # a device coming back is new again: its first event waits the lateness bound, no gap is recorded
    feed(part, [ev("quiet", 9, 39, value=1), ev("busy", 20, 41, value=1)])
    assert next_seq(part, "quiet") == 10 and part.counts["gaps"] == 0


def test_a_rule_changed_while_no_process_ran_resolves_its_episodes_on_restore() -> None:
    part = engine(HOT).partition(0)
    feed(part, [ev("d", 0, 0, value=99), ev("e", 0, 20, value=1)])
    (fired,) = part.take_alerts()
    blob = part.snapshot()
    changed = rule("hot", threshold={"condition": "value > 95"}, channels=["pager"])
    restored = engine(changed).partition(0)
    restored.restore(blob)
    (resolved,) = restored.take_alerts()
    assert (resolved["id"], resolved["status"], resolved["groupKey"]) == (
        fired["id"],
        "resolved",
        "deviceId=d",
    )
    assert resolved["labels"] == fired["labels"] and resolved["endsAtMs"] == restored.wm
    Alert.model_validate(resolved)
    unchanged = engine(HOT).partition(0)
    unchanged.restore(blob)
    assert unchanged.take_alerts() == []  # same rule: the episode goes on
    assert engine().partition(0).restore(blob) == {}  # rule removed: resolved as well


def test_a_restore_mends_a_next_window_end_saved_by_the_scheduling_that_skipped_departures() -> None:
    """Snapshots written before the fix of issue 16 can hold a next end past a pane's departure:
    a restore schedules the departure again, so the window where the oldest pane left is tested."""
    r = rule("s", aggregate={"fn": "avg", "field": "value", "window": "30s", "every": "10s",
                             "condition": "value > 40.0"})
    head = [ev("d1", 0, 5, value=0), ev("d1", 1, 15, value=100), ev("d1", 2, 25, value=0),
            ev("d2", 0, 36, value=0)]  # another device moves the watermark to 31 s: 30 s is done
    tail = [ev("d1", 3, 75, value=0)]
    expected, _ = run([r], head + tail)
    assert [(a["status"], (a["eventTimeMs"] - T0) // 1000) for a in expected] == [
        ("firing", 20), ("resolved", 30), ("firing", 40), ("resolved", 50)]
    part = engine(r).partition(0)
    feed(part, head)
    g = part.states["s"].groups["d1"]
    assert g.due == T0 + 40_000  # the pane [0 s, 10 s) leaves at 40 s
    g.due = T0 + 60_000  # what the old scheduling saved: the next pane to enter or leave after it
    body = orjson.loads(part.snapshot())
    del body["rules"]["s"]["ends"]  # and the old writer did not say how it scheduled
    blob = orjson.dumps(body)
    restored = engine(r).partition(0)
    restored.restore(blob)
    feed(restored, tail)
    restored.flush()
    assert comparable(part.take_alerts() + restored.take_alerts()) == comparable(expected)


def test_held_count_leaves_out_events_released_early_in_seq_order() -> None:
    """The evaluator's gauge read the heap's length, which keeps the entry of an event released
    early behind its predecessor (issue 18): held_count is what waits."""
    part = engine(rule("h", threshold={"condition": "value > 1"})).partition(0)
    feed(part, [ev("d", 0, 0, value=0), ev("d", 1, 3, value=0)])  # a new device: both wait
    assert part.held_count == 2
    feed(part, [ev("e", 0, 6, value=0)])  # the watermark passes d's seq 0: seq 1 follows it out
    assert part.counts["released"] == 2
    assert len(part.held) == 2 and part.held_count == 1  # d seq 1 left, e seq 0 waits
