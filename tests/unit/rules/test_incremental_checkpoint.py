"""Incremental checkpoints: a full snapshot plus the deltas written after it restore the same
state — checkpoint at any points, restore from the last chain, replay the rest: same alerts."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.rules import partition_checkpoints
from alertpipe.workers.rules.engine import Engine, EngineSettings, Partition

from .helpers import comparable, ev, feed
from .test_engine_properties import LATENESS, RULES, streams

pytestmark = pytest.mark.unit


def _engine(device_ttl_ms: int) -> Engine:
    return Engine(
        EngineSettings("acme", "main", LATENESS, device_ttl_ms=device_ttl_ms), RULES, clock=lambda: 0.0
    )


def _run_with_checkpoints(
    events: list[dict[str, Any]],
    cuts: list[int],
    device_ttl_ms: int,
    lost: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[dict[str, Any]], Partition, list[tuple[bool, bytes]]]:
    """Feed ``events`` checkpointing at ``cuts``; restore from what Redis would hold at the last
    cut (its last full snapshot + the deltas after it) and feed the rest there."""
    part = _engine(device_ttl_ms).partition(0)
    chain: list[tuple[bool, bytes]] = []
    kinds = []
    out = []
    pos = 0
    for i, cut in enumerate(sorted(cuts)):
        feed(part, events[pos:cut])
        pos = cut
        full, blob = part.checkpoint(offset=cut)
        kinds.append((full, blob))
        if i in lost:
            continue  # the write failed: not in Redis, not confirmed
        chain = [(full, blob)] if full else [*chain, (full, blob)]
        part.saved()
    out.extend(part.take_alerts())
    restored = _engine(device_ttl_ms).partition(0)
    if chain:
        meta = restored.restore(chain[0][1], [b for _, b in chain[1:]])
        start = meta["offset"]
    else:
        start = 0
    # the alerts emitted after the restored cut are emitted again by the replay (same ids)
    cut_alerts, live = _alerts_until(events[:start], device_ttl_ms)
    assert _state(restored) == _state(live)
    feed(restored, events[start:])
    restored.flush()
    return cut_alerts + restored.take_alerts(), restored, kinds


def _alerts_until(events: list[dict[str, Any]], device_ttl_ms: int) -> tuple[list[dict[str, Any]], Partition]:
    part = _engine(device_ttl_ms).partition(0)
    feed(part, events)
    return part.take_alerts(), part


def _expected(events: list[dict[str, Any]], device_ttl_ms: int) -> list[dict[str, Any]]:
    part = _engine(device_ttl_ms).partition(0)
    feed(part, events)
    part.flush()
    return part.take_alerts()


@given(
    streams(),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
    st.sampled_from([86_400_000, 20_000]),
    st.sets(st.integers(0, 7), max_size=2),
)
def test_full_plus_deltas_anywhere_then_restore_gives_the_same_alerts(
    events: list[dict[str, Any]], cuts: list[int], ttl: int, lost: set[int]
) -> None:
    cuts = [c % (len(events) + 1) for c in cuts]
    got, _, kinds = _run_with_checkpoints(events, cuts, ttl, lost)
    assert comparable(got) == comparable(_expected(events, ttl))
    assert kinds[0][0]  # the first checkpoint is a full one
    for i in lost:
        if i + 1 < len(kinds):
            assert kinds[i + 1][0]  # after one that was not confirmed, a full one


def test_deltas_hold_only_what_changed_and_restore_the_same_snapshot() -> None:
    events = [ev(f"d{i}", 0, i / 10, value=10) for i in range(200)]
    part = _engine(86_400_000).partition(0)
    feed(part, events)
    full, base = part.checkpoint(offset=200)
    part.saved()
    assert full
    feed(part, [ev("d3", 1, 21, value=95), ev("d7", 1, 21.5, value=20)])
    full, delta = part.checkpoint(offset=202)
    part.saved()
    assert not full and len(delta) < len(base) / 2
    rows = orjson.loads(delta)["devices"]
    # the two devices, and those whose first event the 1.6 s of watermark released
    assert {"d3", "d7"} <= {r[1] for r in rows} and len(rows) < 40
    restored = _engine(86_400_000).partition(0)
    assert restored.restore(base, [delta])["offset"] == 202
    assert _state(restored) == _state(part)


def _state(part: Partition) -> dict[str, Any]:
    """A snapshot as data, order-free (restore may rebuild dicts in another order)."""
    body: dict[str, Any] = orjson.loads(part.snapshot())
    for gen in ("devices", "oldDevices"):
        body[gen] = sorted(body[gen], key=repr)
    for r in body["rules"].values():
        r["groups"] = sorted(r["groups"], key=repr)
        r["firing"] = sorted(r["firing"], key=repr)
    return body


def test_deltas_that_outgrow_the_snapshot_give_way_to_a_full_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition_checkpoints, "_MIN_DELTA_BUDGET", 0)
    part = _engine(86_400_000).partition(0)
    feed(part, [ev("d0", 0, 0, value=1)])
    assert part.checkpoint()[0]
    part.saved()
    kinds = []
    for i in range(1, 40):
        feed(part, [ev(f"n{i}", 0, i, value=1)])
        full, _ = part.checkpoint()
        part.saved()
        kinds.append(full)
    assert not kinds[0] and any(kinds)  # deltas first, then a full one once they add up


def test_a_rule_change_starts_a_new_chain() -> None:
    part = _engine(86_400_000).partition(0)
    feed(part, [ev("d0", 0, 0, value=1)])
    part.checkpoint()
    part.saved()
    part.engine.set_rules(RULES[:2])
    assert part.checkpoint()[0]


def test_a_device_that_changes_generation_under_the_watermark_is_in_the_delta() -> None:
    """A stale reorder-heap entry moves its device back from the old generation when the watermark
    passes it: the delta must carry that move, or a restore keeps the device in the generation the
    next rotation forgets (found by the property test above)."""
    part = _engine(20_000).partition(0)  # generations rotate every 10 s of event time
    # d0's seq 2 waits for seq 1 (a heap entry at 9 s that stays once both are released)
    feed(part, [ev("d0", 0, 0, value=1), ev("d0", 2, 9, value=1), ev("d0", 1, 9.5, value=1)])
    feed(part, [ev("d1", 0, 10, value=1)])  # rotation: d0 is now in the old generation
    full, base = part.checkpoint(offset=4)
    assert full and "d0" in {r[0] for r in orjson.loads(base)["oldDevices"]}
    part.saved()
    feed(part, [ev("d1", 1, 15, value=1)])  # the watermark passes 9 s: d0 back to the current one
    full, delta = part.checkpoint(offset=5)
    assert not full
    restored = _engine(20_000).partition(0)
    restored.restore(base, [delta])
    assert _state(restored) == _state(part)
