"""The repartition stage: group keys that span devices see the whole stream, whatever the partitioning,
the interleaving of upstream partitions, replays of stage 1 or checkpoints of stage 2."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertpipe.workers.rules.groups import ACCEPTED, DUPLICATE, LATE, STALE, GroupStage, merged_watermark
from alertpipe.workers.rules.state import _NEG, EngineSettings

from .helpers import T0, comparable, ev, rule
from .twostage import TwoStage, apply, per_partition, upstream_of, whole_stream

pytestmark = pytest.mark.unit

AVG_BY_SITE = rule("site-hot", select={"types": ["cpu"]}, by=["site"],
                   aggregate={"fn": "avg", "field": "value", "window": "1m", "condition": "value > 60.0"})
RULES = [
    AVG_BY_SITE,
    rule("site-count", by=["site"], aggregate={"fn": "count", "window": "4s", "every": "2s",
                                               "condition": "value >= 4.0"}),
    rule("region-type-max", by=["region", "type"], aggregate={"fn": "max", "field": "value", "window": "5s",
                                                            "condition": "value > 90.0"}),
    rule("site-spike", by=["site"], threshold={"condition": "value > 95"}, **{"for": "2s"}),
    rule("site-silent", by=["site"], absence={"for": "7s"}),
    rule("device-hot", threshold={"condition": "value > 80"}),  # per device: stays in stage 1
]
SITES = ["berlin", "paris"]


def site_events(n_dev: int = 12, minutes: int = 3, hot: tuple[int, int] = (60, 120)) -> list[dict[str, Any]]:
    """Devices of two sites, one event per device every 5 s; berlin runs hot in [hot) seconds."""
    events = []
    for t in range(0, minutes * 60, 5):
        for d in range(n_dev):
            site = SITES[d % 2]
            value = 90 if site == "berlin" and hot[0] <= t < hot[1] and d % 4 == 0 else 40
            events.append(ev(f"dev{d}", t // 5, t + d * 0.01, site=site, region="eu", value=value))
    return events


def by_rule(alerts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["rule"] == name]


def test_avg_by_site_sees_every_partition_while_per_partition_evaluation_does_not() -> None:
    events = site_events()
    # hot devices (every 4th) span partitions: berlin's average is (3*40 + 3*90)/6 = 65 > 60 per minute
    assert len({upstream_of(f"dev{d}", 6) for d in range(0, 12, 2)}) > 1
    pipe = TwoStage([AVG_BY_SITE], upstreams=6, partitions=6)
    pipe.feed(events)
    pipe.close()
    got = pipe.drain()
    expected = by_rule(whole_stream([AVG_BY_SITE], events), "site-hot")
    assert comparable(got) == comparable(expected)
    firing = [a for a in got if a["status"] == "firing"]
    assert len(firing) == 1 and firing[0]["groupKey"] == "site=berlin"
    assert firing[0]["values"]["value"] == pytest.approx(65.0)
    assert firing[0]["values"]["count"] == 6 * 12  # every berlin event of the minute, from all partitions
    assert firing[0]["startsAtMs"] == T0 + 120_000
    # the old per-partition evaluation: one group per partition, wrong values, several alerts
    old = by_rule(per_partition([AVG_BY_SITE], events, 6), "site-hot")
    assert comparable(old) != comparable(expected)
    assert {round(a["values"]["value"], 3) for a in old if a["status"] == "firing"} != {65.0}


def test_per_device_rules_stay_in_stage_1() -> None:
    events = site_events()
    pipe = TwoStage(RULES, upstreams=3, partitions=2)
    pipe.feed(events)
    pipe.close()
    stage2 = pipe.drain()
    assert {a["rule"] for a in stage2} <= {r.name for r in RULES if r.spans_devices}
    assert {a["rule"] for a in pipe.alerts1} == {"device-hot"}
    assert comparable(pipe.alerts1) == comparable(by_rule(whole_stream(RULES, events), "device-hot"))


def test_merged_watermark_is_the_minimum_and_skips_idle_upstreams() -> None:
    assert merged_watermark(3, {0: 10, 1: 5, 2: 7}, set()) == 5
    assert merged_watermark(3, {0: 10, 2: 7}, set()) == _NEG  # upstream 1 not heard from: wait for it
    assert merged_watermark(3, {0: 10, 2: 7}, {1}) == 7  # announced idle and never carried an event
    assert merged_watermark(2, {}, {0, 1}) is None


def _stage(**kw: Any) -> GroupStage:
    settings = EngineSettings("acme", "main", 5000)
    return GroupStage(settings, [AVG_BY_SITE], upstreams=2, clock=lambda: 0.0, **kw)


def test_stage2_watermark_only_moves_forward_and_an_idle_mark_never_hides_an_upstream_with_events() -> None:
    s = _stage()
    s.watermark(0, 100)
    assert s.wm == _NEG
    s.watermark(1, 50)
    assert s.wm == 50
    s.watermark(1, 40)  # an older watermark (a stage-1 replay) changes nothing
    assert s.wm == 50 and s.wms[1] == 50
    s.watermark(1, None)  # upstream 1 has carried events: an idle mark does not leave it out
    assert s.wm == 50 and 1 not in s.idle
    t = _stage()
    t.watermark(1, None)
    t.watermark(0, 100)
    assert t.wm == 100
    t.watermark(1, 20)  # the idle upstream woke up: it counts again, the watermark never goes back
    assert t.wm == 100 and t.idle == set()


def test_idempotency_by_rule_device_seq_late_and_stale() -> None:
    s = _stage()
    fp = AVG_BY_SITE.fingerprint
    e = ev("d1", 3, 10, site="berlin", value=50)
    assert s.offer("site-hot", fp, e, e["ts"]) == ACCEPTED
    assert s.offer("site-hot", fp, dict(e), e["ts"]) == DUPLICATE  # a copy while it waits
    lower = ev("d1", 2, 9, site="berlin", value=50)
    assert s.offer("site-hot", fp, lower, lower["ts"]) == DUPLICATE  # a lower seq of the device
    s.watermark(0, T0 + 20_000)
    s.watermark(1, T0 + 20_000)
    assert s.offer("site-hot", fp, dict(e), e["ts"]) == DUPLICATE  # a copy after it was applied
    new_old = ev("d2", 0, 5, site="berlin", value=50)
    assert s.offer("site-hot", fp, new_old, new_old["ts"]) == LATE  # new, but behind the watermark
    assert s.offer("site-hot", fp, dict(new_old), new_old["ts"]) == DUPLICATE
    assert s.offer("site-hot", "other-revision", ev("d3", 0, 30), T0 + 30_000) == STALE
    assert s.offer("no-such-rule", fp, ev("d3", 0, 30), T0 + 30_000) == STALE
    assert s.counts == {"accepted": 1, "duplicate": 4, "late": 1, "stale": 2}


def test_a_stage1_replay_after_a_crash_changes_nothing() -> None:
    events = site_events()
    expected = TwoStage(RULES)
    expected.feed(events)
    expected.close()
    want = expected.drain()
    pipe = TwoStage(RULES)
    half = len(events) // 2
    pipe.feed(events[: half // 2])
    snaps = {u: p.snapshot() for u, p in pipe.engine.partitions.items()}
    pipe.feed(events[half // 2: half])  # forwarded, then the process dies
    pipe.engine.partitions.clear()
    for u, blob in snaps.items():
        pipe.part(u).restore(blob)
    pipe.feed(events[half // 2:])  # the successor replays from the checkpoint: copies are forwarded again
    pipe.close()
    got = pipe.drain(seed=3)
    assert comparable(got) == comparable(want)
    dups = sum(s.counts["duplicate"] for s in pipe.stage2.values())
    assert dups > 0 and all(s.counts["late"] == 0 for s in pipe.stage2.values())


def test_stage2_snapshot_restore_round_trip() -> None:
    events = site_events()
    pipe = TwoStage(RULES)
    pipe.feed(events)
    pipe.close()
    want = pipe.drain()
    pipe2 = TwoStage(RULES)
    pipe2.feed(events)
    pipe2.close()
    out: list[dict[str, Any]] = []
    for r, stage in pipe2.stage2.items():
        records = [raw for (_u, rr), q in sorted(pipe2.channels.items()) if rr == r for raw in q]
        cut = len(records) // 2
        for raw in records[:cut]:
            apply(stage, raw)
        out += stage.take_alerts()
        fresh = GroupStage(stage.settings, RULES, upstreams=pipe2.upstreams, partition=r, clock=lambda: 0.0)
        assert fresh.restore(stage.snapshot(offset=cut)) == {"offset": cut}
        for raw in records[cut:]:
            apply(fresh, raw)
        out += fresh.take_alerts()
    assert comparable(out) == comparable(want)


def test_a_changed_rule_resolves_its_group_episodes() -> None:
    s = _stage()
    fp = AVG_BY_SITE.fingerprint
    for i, d in enumerate(["a", "b"]):
        e = ev(d, 0, 10 + i, site="berlin", value=99)
        s.offer("site-hot", fp, e, e["ts"])
    s.watermark(0, T0 + 61_000)
    s.watermark(1, T0 + 61_000)
    assert [a["status"] for a in s.take_alerts()] == ["firing"]
    changed = rule("site-hot", select={"types": ["cpu"]}, by=["site"],
                   aggregate={"fn": "avg", "field": "value", "window": "1m", "condition": "value > 70.0"})
    s.set_rules([changed])
    (resolved,) = s.take_alerts()
    assert resolved["status"] == "resolved" and resolved["values"]["reason"] == "rule changed or removed"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3000), st.integers(0, 100)), min_size=1,
                max_size=80),
       st.integers(1, 5), st.integers(1, 4), st.integers(1, 9), st.integers(0, 1000))
def test_property_any_partitioning_batching_and_interleaving_gives_the_same_alerts(
    raw: list[tuple[int, int, int]], upstreams: int, partitions: int, batch: int, seed: int
) -> None:
    """Stage 2 applies a group's events in (ts, deviceId, seq) order whatever the upstream
    partitions, batches and interleaving; for rules whose result does not depend on the order of
    events within a window (aggregates, absence) that is the alerts of one partition seeing the
    whole stream. (A cross-device threshold depends on the order of its devices' events, which
    only stage 2 defines: it is compared with the canonical single-partition run.)"""
    events = []
    seqs: dict[int, int] = {}
    t = 0
    for dev, dt, value in raw:
        t += dt
        seq = seqs[dev] = seqs.get(dev, -1) + 1
        events.append(ev(f"d{dev}", seq, t / 1000, site=SITES[dev % 2], region="eu", value=value))
    pipe = TwoStage(RULES, upstreams=upstreams, partitions=partitions)
    pipe.feed(events, batch=batch)
    pipe.close()
    got = pipe.drain(seed=seed) + pipe.alerts1
    canonical = TwoStage(RULES, upstreams=1, partitions=1)
    canonical.feed(events, batch=1)
    canonical.close()
    assert comparable(got) == comparable(canonical.drain() + canonical.alerts1)
    order_free = {"site-hot", "site-count", "region-type-max", "device-hot"}
    assert comparable([a for a in got if a["rule"] in order_free]) == comparable(
        [a for a in whole_stream(RULES, events) if a["rule"] in order_free])
    assert all(s.counts["late"] == 0 and s.counts["duplicate"] == 0 for s in pipe.stage2.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 9), st.integers(0, 1000))
def test_property_a_stage1_crash_anywhere_changes_nothing(a: int, b: int, batch: int, seed: int) -> None:
    """Stage 1 checkpoints after event ``cut``, forwards up to ``crash``, dies; its successor replays
    from the checkpoint. Stage 2 skips every copy and ends with the alerts of a run without a crash."""
    events = site_events(n_dev=6, minutes=2, hot=(30, 60))
    cut, crash = sorted((a % (len(events) + 1), b % (len(events) + 1)))
    clean = TwoStage(RULES)
    clean.feed(events, batch=batch)
    clean.close()
    want = clean.drain()
    pipe = TwoStage(RULES)
    pipe.feed(events[:cut], batch=batch)
    snaps = {u: p.snapshot() for u, p in pipe.engine.partitions.items()}
    pipe.feed(events[cut:crash], batch=batch)
    pipe.engine.partitions.clear()
    for u, blob in snaps.items():
        pipe.part(u).restore(blob)
    pipe.feed(events[cut:], batch=batch)
    pipe.close()
    assert comparable(pipe.drain(seed=seed)) == comparable(want)
    assert all(s.counts["late"] == 0 for s in pipe.stage2.values())


def test_switching_the_stage_on_resolves_what_the_per_partition_evaluation_fired() -> None:
    """A pipeline that evaluated `by: [site]` per partition gets the repartition topic: the firing
    episodes of those per-partition groups resolve on restore (stage 2 starts the groups afresh)."""
    from alertpipe.workers.rules.engine import Engine

    old = Engine(EngineSettings("acme", "main", 5000), [AVG_BY_SITE], clock=lambda: 0.0).partition(0)
    for i in range(3):
        e = ev(f"d{i}", 0, 10 + i, site="berlin", value=99)
        old.offer(e, e["deviceId"], e["seq"], e["ts"])
    old.advance_to(T0 + 61_000)
    (fired,) = old.take_alerts()
    new = Engine(EngineSettings("acme", "main", 5000, repartition=True), [AVG_BY_SITE],
                 clock=lambda: 0.0).partition(0)
    new.restore(old.snapshot(offset=3))
    (resolved,) = new.take_alerts()
    assert (resolved["id"], resolved["status"]) == (fired["id"], "resolved")
    assert resolved["values"] == {"reason": "rule changed or removed"}
    assert new.snapshot()  # and from now on it forwards
    e = ev("d9", 0, 70, site="berlin", value=1)
    new.offer(e, "d9", 0, e["ts"])
    new.advance_to(T0 + 80_000)
    assert [(r.name, k) for r, k, *_ in new.take_forwarded()] == [("site-hot", "berlin")]
