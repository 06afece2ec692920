"""The generator's plan: deterministic, open-loop ordered, knobs as asked, and a ledger of expected
alerts that the reference evaluator (tests/reference) and the engine itself agree with."""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import pytest

from alertpipe.generate import (
    HOT_RULE,
    SILENT_RULE,
    SITE_RULE,
    Knobs,
    Ledger,
    Plan,
    PlanError,
    RequestRecord,
    Scenario,
)
from alertpipe.generate import parse_schedule as sched
from alertpipe.workers.config import RuleSpec
from alertpipe.workers.events import EventError, event_from_obj
from alertpipe.workers.rules import CompiledRule, compile_rule
from tests.reference.evaluator import Transition, evaluate
from tests.reference.pipeline import END, run_engine

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000
PARTITIONS = 3
EDGES = Knobs(duplicates=0.05, reorder=0.05, reorder_ms=1500, late=0.02, gaps=0.02, skew_ms=800,
              hot_devices=2, hot_share=0.2, malformed=0.01, oversized=0.005, oversized_bytes=1000)


def scenario(knobs: Knobs = EDGES, **kw: Any) -> Scenario:
    base: dict[str, Any] = {"devices": 24, "silent_devices": 3, "flappers": 0.4, "episode_every_s": 6.0,
                            "episode_len_s": 2.0, "seed": 7}
    base.update(kw)
    return Scenario("acme", "main", sched("steady:60"), 40.0, knobs=knobs, **base)


def compiled(plan: Plan) -> list[CompiledRule]:
    return [compile_rule(r["name"], RuleSpec.model_validate(r["spec"])) for r in plan.rules()]


def arrivals(plan: Plan) -> list[tuple[int, dict[str, Any]]]:
    """What reaches the events topic, in send order: valid events only (the ingestor rejects the
    rest), on the partition their device hashes to."""
    out = []
    for s in plan.sends():
        if s.kind in ("malformed", "oversized"):
            continue
        out.append((zlib.crc32(s.body["deviceId"].encode()) % PARTITIONS, s.body))
    return out


def expected(plan: Plan) -> list[Transition]:
    return sorted(Transition(e.rule, e.group_key, e.status, e.at_ms, e.starts_at_ms) for e in plan.expected)


@pytest.mark.parametrize("for_ms", [0, 1500])
@pytest.mark.parametrize("seed", [7, 8, 9])
def test_expected_alerts_equal_the_reference_and_the_engine(for_ms: int, seed: int) -> None:
    plan = Plan(scenario(for_ms=for_ms, seed=seed), T0)
    got = arrivals(plan)
    rules = compiled(plan)
    want = expected(plan)
    assert {t.rule for t in want} == {HOT_RULE, SILENT_RULE}, "the scenario raises both rules' alerts"
    assert want == evaluate(rules, got, lateness_ms=5000, final_wm=END)
    alerts = run_engine(rules, got, upstreams=PARTITIONS, lateness_ms=5000)
    engine = sorted(Transition(a["rule"], a["groupKey"], a["status"], a["eventTimeMs"], a["startsAtMs"])
                    for a in alerts)
    assert engine == want
    assert sorted((a["id"], a["status"]) for a in alerts) == sorted((e.id, e.status) for e in plan.expected)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_site_outages_span_devices_and_equal_the_reference_and_the_engine(seed: int) -> None:
    plan = Plan(scenario(sites=4, site_episode_every_s=9.0, site_episode_len_s=3.0, seed=seed), T0)
    got = arrivals(plan)
    rules = compiled(plan)
    want = expected(plan)
    site = [e for e in plan.expected if e.rule == SITE_RULE]
    # every site has outages, each a firing and (but the last, maybe) a resolution
    assert {e.group_key for e in site} == {f"site=site-0{i}" for i in range(4)}
    assert sum(e.status == "firing" for e in site) >= 4 * 3
    assert sum(e.status == "resolved" for e in site) >= sum(e.status == "firing" for e in site) - 4
    # a site's alerts are triggered by several of its devices: the group spans them
    assert all(len({e.device for e in site if e.group_key == g}) > 1 for g in {e.group_key for e in site})
    assert {t.rule for t in want} == {HOT_RULE, SILENT_RULE, SITE_RULE}
    assert want == evaluate(rules, got, lateness_ms=5000, final_wm=END)
    alerts = run_engine(rules, got, upstreams=PARTITIONS, lateness_ms=5000)
    engine = sorted(Transition(a["rule"], a["groupKey"], a["status"], a["eventTimeMs"], a["startsAtMs"])
                    for a in alerts)
    assert engine == want
    assert sorted((a["id"], a["status"]) for a in alerts) == sorted((e.id, e.status) for e in plan.expected)
    # sites change no event of a scenario without them but for the site field and the outages
    plain = [s.body for s in Plan(scenario(seed=seed), T0).sends()]
    with_sites = [s.body for s in Plan(scenario(sites=4, site_episode_every_s=9.0, site_episode_len_s=3.0,
                                                seed=seed), T0).sends()]  # fmt: skip
    assert [{k: v for k, v in b.items() if k not in ("site", "value")} for b in with_sites] == [
        {k: v for k, v in b.items() if k != "value"} for b in plain]


def test_the_same_seed_plans_the_same_stream() -> None:
    a = [(s.at, s.kind, s.body) for s in Plan(scenario(), T0).sends()]
    b = [(s.at, s.kind, s.body) for s in Plan(scenario(), T0).sends()]
    c = [(s.at, s.kind, s.body) for s in Plan(scenario(seed=8), T0).sends()]
    assert a == b and a != c


def test_sends_are_in_send_order_and_keep_the_schedule() -> None:
    plan = Plan(scenario(), T0)
    sends = list(plan.sends())
    ats = [s.at for s in sends]
    assert ats == sorted(ats)
    planned = plan.counts["event"] + plan.counts["reordered"] + plan.counts["late"]
    assert planned == pytest.approx(60 * 40, abs=1)


def test_knobs_appear_in_their_proportions() -> None:
    plan = Plan(scenario(), T0)
    sends = list(plan.sends())
    kinds = Counter(s.kind for s in sends)
    n = 60 * 40
    assert kinds["duplicate"] == plan.counts["duplicate"] == pytest.approx(0.05 * n, rel=0.35)
    assert kinds["reordered"] == pytest.approx(0.05 * n, rel=0.35)
    assert kinds["late"] == pytest.approx(0.02 * (n - 7 * 60), rel=0.5)
    assert plan.counts["gap"] > 10
    # hot devices: the first two non-silent ones take about 20 % (plus their uniform share)
    by_dev = Counter(s.body["deviceId"] for s in sends if s.kind == "event")
    hot = by_dev["dev-00003"] + by_dev["dev-00004"]
    assert hot / sum(by_dev.values()) == pytest.approx(0.2 + 2 / 24 * 0.8, abs=0.05)


def test_duplicates_repeat_a_sent_event_and_seqs_skip_for_gaps() -> None:
    sends = list(Plan(scenario(), T0).sends())
    firsts = {(s.body["deviceId"], s.body["seq"]): s for s in sends if s.kind in ("event", "reordered")}
    dups = [s for s in sends if s.kind == "duplicate"]
    assert dups and all(firsts[(s.body["deviceId"], s.body["seq"])].body == s.body for s in dups)
    seqs: dict[str, list[int]] = {}
    for s in sends:
        if s.kind in ("event", "reordered", "late"):
            seqs.setdefault(s.body["deviceId"], []).append(s.body["seq"])
    missing = sum(max(v) + 1 - len(set(v)) for v in seqs.values())
    assert missing > 10  # the gaps: seqs never sent


def test_late_events_go_beyond_the_lateness_bound_and_reordered_ones_stay_inside() -> None:
    plan = Plan(scenario(), T0)
    for s in plan.sends():
        sent_ms = T0 + s.at * 1000
        behind = sent_ms - s.body.get("ts", 0) if isinstance(s.body.get("ts"), int) else 0
        if s.kind == "late":
            assert behind > 5000 + 800  # later than lateness, whatever the device's skew
        elif s.kind == "reordered":
            assert behind <= 1500 + 800 + 1


def test_skew_is_fixed_per_device_and_bounded() -> None:
    plan = Plan(scenario(), T0)
    skews = {d.name: d.skew for d in plan.devices}
    assert all(abs(v) <= 800 for v in skews.values()) and len(set(skews.values())) > 5
    for s in plan.sends():
        if s.kind == "event":
            assert s.body["ts"] - round(T0 + s.at * 1000) in range(skews[s.body["deviceId"]] - 1,
                                                                    skews[s.body["deviceId"]] + 1)


def test_malformed_events_are_rejected_by_the_codec_and_oversized_are_big() -> None:
    sends = list(Plan(scenario(), T0).sends())
    bad = [s for s in sends if s.kind == "malformed"]
    assert bad
    for s in bad:
        with pytest.raises(EventError):
            event_from_obj(s.body, "acme")
    big = [s for s in sends if s.kind == "oversized"]
    assert big and all(len(s.body["pad"]) == 1000 and s.body["type"] == "blob" for s in big)


def test_skew_or_reorder_beyond_the_lateness_bound_is_refused() -> None:
    with pytest.raises(PlanError, match="allowed lateness"):
        Plan(scenario(Knobs(skew_ms=2000)), T0)
    with pytest.raises(PlanError, match="allowed lateness"):
        Plan(scenario(Knobs(reorder=0.1, reorder_ms=4000)), T0)
    with pytest.raises(PlanError, match="late_delay_ms"):
        Plan(scenario(Knobs(late=0.1, late_delay_ms=5500)), T0)


def test_due_times_of_a_clean_stream_are_the_trigger_send_times() -> None:
    plan = Plan(scenario(Knobs(), silent_devices=0), T0)
    sends = {(s.body["deviceId"], s.body["seq"]): s for s in plan.sends()}
    hot = [e for e in plan.expected if e.due_s is not None]
    exact = [e for e in hot if e.exact]
    # only a device's first lateness bound (its first events are held) makes an alert inexact
    assert len(exact) >= 0.8 * len(hot)
    for e in exact:
        assert e.seq is not None
        assert e.due_s == e.trigger_s == sends[(e.device, e.seq)].at
        assert e.at_ms == sends[(e.device, e.seq)].body["ts"]


def test_ledger_summarises_lateness_and_failures() -> None:
    plan = Plan(scenario(Knobs(), silent_devices=0), T0)
    list(plan.sends())
    led = Ledger(plan, "http://x/v1/events")
    led.requests += [RequestRecord(T0, T0 + 2, T0 + 9, 202, 10),
                     RequestRecord(T0 + 5, T0 + 5, T0 + 8, 503, 4),
                     RequestRecord(T0 + 6, T0 + 6, T0 + 7, 413, 1, "oversized")]
    summary = led.summary()
    assert summary["failedEvents"] == 4 and not led.complete()
    assert summary["lateness"]["max"] == 2 and summary["ackMs"]["p50"] == 7
    doc = led.to_json()
    assert doc["expected"] and all(e["dueMs"] is None or e["dueMs"] >= T0 for e in doc["expected"])
    assert [r["name"] for r in doc["rules"]] == [HOT_RULE]
