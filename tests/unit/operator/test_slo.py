"""The per-tenant SLO: deliverer /metrics texts -> totals -> the verdict over the window (pure), and
the watch that keeps the window and writes status.slo (with a fake scraper and apiserver)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

import alertpipe.workers.deliverer.metrics as dm
from alertpipe.operator.decisions.conditions import Observed, pipeline_conditions
from alertpipe.operator.decisions.slo import SLOTotals, judge_slo, slo_condition, slo_totals, window_base
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.operator.slo import SLOWatch, condition_of
from alertpipe.operator.slo_models import SLOSpec
from tests.unit.operator.memory import _merge

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


def deliverer_text(fast: int, slow: int, delivered: int, dead: int, channel: str = "ops") -> str:
    """A deliverer pod's /metrics: ``fast`` alerts at 50 ms, ``slow`` at 3 s (e2e, basis ingest)."""
    r = CollectorRegistry()
    e2e = Histogram(dm.E2E_LATENCY._name, "e2e", ["pipeline", "channel", "basis"],
                    buckets=dm.E2E_LATENCY._upper_bounds[:-1], registry=r)
    out = Counter(dm.OUTCOMES._name, "outcomes", ["tenant", "channel", "decision"], registry=r)
    for _ in range(fast):
        e2e.labels("p", channel, "ingest").observe(0.05)
    for _ in range(slow):
        e2e.labels("p", channel, "ingest").observe(3.0)
    e2e.labels("p", channel, "event").observe(100.0)  # event-time basis: not the SLO's
    out.labels("t", channel, "delivered").inc(delivered)
    out.labels("t", channel, "dead_lettered").inc(dead)
    out.labels("t", channel, "muted").inc(1000)  # neither success nor failure
    return generate_latest(r).decode()


def test_totals_sum_pods_and_read_only_the_slo_series() -> None:
    t = slo_totals([deliverer_text(10, 0, 10, 0), deliverer_text(5, 5, 9, 1, "pager")])
    assert t.pods == 2 and t.delivered == 19 and t.dead_lettered == 1
    assert t.buckets[0.05] == 15 and t.buckets[float("inf")] == 20  # the event-basis sample is not in


def hist(*texts: tuple[float, str]) -> list[tuple[float, SLOTotals]]:
    return [(at, slo_totals([t])) for at, t in texts]


def test_met_when_p99_and_success_are_within_the_objective() -> None:
    h = hist((0, deliverer_text(0, 0, 0, 0)), (60, deliverer_text(1000, 0, 1000, 0)))
    v = judge_slo(SLOSpec(), h, 60, NOW)
    assert (v.met, v.reason, v.deliveries, v.success_ratio) == ("True", "ObjectiveMet", 1000, 1.0)
    assert v.latency_p99_seconds is not None and v.latency_p99_seconds <= 0.05
    assert v.window == "1m" and v.observed_at == "2026-12-03T18:00:00Z"


def test_slow_alerts_break_the_latency_objective() -> None:
    h = hist((0, deliverer_text(0, 0, 0, 0)), (60, deliverer_text(95, 5, 100, 0)))
    v = judge_slo(SLOSpec(latency_p99="1s"), h, 60, NOW)
    assert (v.met, v.reason) == ("False", "LatencyAboveObjective")
    assert v.latency_p99_seconds is not None and v.latency_p99_seconds > 1
    assert "above the 1s objective" in v.message


def test_dead_letters_break_the_success_objective_and_both_can_miss() -> None:
    h = hist((0, deliverer_text(0, 0, 0, 0)), (60, deliverer_text(100, 0, 97, 3)))
    v = judge_slo(SLOSpec(success_ratio=0.99), h, 60, NOW)
    assert (v.met, v.reason, v.success_ratio) == ("False", "SuccessBelowObjective", 0.97)
    assert "success 97 % below the 99 % objective" in v.message
    h = hist((0, deliverer_text(0, 0, 0, 0)), (60, deliverer_text(90, 10, 90, 10)))
    assert judge_slo(SLOSpec(), h, 60, NOW).reason == "LatencyAndSuccessOffObjective"


def test_only_the_window_counts() -> None:
    """Old slowness outside the window no longer counts; the base is the oldest sample inside it."""
    h = hist((0, deliverer_text(0, 0, 0, 0)), (300, deliverer_text(0, 500, 500, 0)),
             (600, deliverer_text(0, 500, 500, 0)), (900, deliverer_text(1000, 500, 1500, 0)))
    assert window_base(h, 900, 300) == 2
    v = judge_slo(SLOSpec(window="5m"), h, 900, NOW)
    assert (v.met, v.deliveries, v.window) == ("True", 1000, "5m")
    assert judge_slo(SLOSpec(window="1h"), h, 900, NOW).met == "False"


def test_no_delivery_or_no_pod_is_unknown_never_a_pass() -> None:
    quiet = hist((0, deliverer_text(5, 0, 5, 0)), (60, deliverer_text(5, 0, 5, 0)))
    assert judge_slo(SLOSpec(), quiet, 60, NOW).reason == "NoData"
    gone = [(0.0, slo_totals([deliverer_text(5, 0, 5, 0)])), (60.0, slo_totals([]))]
    v = judge_slo(SLOSpec(), gone, 60, NOW)
    assert (v.met, v.reason) == ("Unknown", "NoDeliverer")


def test_a_restarted_deliverer_starts_its_counters_again() -> None:
    h = hist((0, deliverer_text(0, 0, 5000, 0)), (60, deliverer_text(100, 0, 100, 0)))
    v = judge_slo(SLOSpec(), h, 60, NOW)
    assert (v.met, v.deliveries) == ("True", 100)


def test_slomet_condition_follows_status_slo_and_joins_the_pipeline_conditions() -> None:
    h = hist((0, deliverer_text(0, 0, 0, 0)), (60, deliverer_text(100, 0, 90, 10)))
    want = slo_condition(judge_slo(SLOSpec(), h, 60, NOW))
    assert want is not None and (want.type, want.status) == ("SLOMet", "False")
    types = [w.type for w in pipeline_conditions(Observed(slo=want))]
    assert types[-1] == "SLOMet" and "Ready" in types
    assert slo_condition(None) is None


SPEC = {"kafka": {"bootstrapServers": "k:9092"}, "redis": {"url": "redis://r:6379/0"}}


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}

    async def merge_patch(self, kind: str, ns: str, name: str, patch: dict[str, Any], sub: str = "") -> Any:
        assert (kind, sub) == ("AlertPipeline", "status")
        self.patches.append(patch)
        self.status = _merge(self.status, patch["status"])
        return {"metadata": {"uid": "u1"}, "status": self.status}


class FakeScraper:
    def __init__(self, texts: list[list[str]]) -> None:
        self.texts_seq = texts

    async def texts(self, namespace: str, pipeline: str, component: str) -> list[str]:
        assert component == "deliverer"
        return self.texts_seq.pop(0)


class FakeRec:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.kube = FakeKube()
        body = {"metadata": {"namespace": "ns", "name": "p", "uid": "u1"}, "spec": spec, "status": {}}
        self.store = type("S", (), {"pipelines": {("ns", "p"): body}})()
        self.scheduled: list[Any] = []
        self.queue = type("Q", (), {"schedule": lambda _s, key, delay: self.scheduled.append(key)})()

    def spec(self, body: dict[str, Any]) -> tuple[AlertPipelineSpec, list[Any]]:
        return AlertPipelineSpec.model_validate(body["spec"]), []


def test_watch_writes_status_slo_and_asks_the_reconcile_for_slomet() -> None:
    rec = FakeRec({**SPEC, "slo": {"latencyP99": "1s", "successRatio": 0.99, "window": "10m"}})
    scraper = FakeScraper([[deliverer_text(0, 0, 0, 0)], [deliverer_text(50, 50, 100, 0)],
                           [deliverer_text(50, 50, 100, 0)]])
    watch = SLOWatch(rec, scraper)  # type: ignore[arg-type]

    async def run() -> None:
        first = await watch.tick("ns", "p")
        assert first is not None and first.reason == "NoData"
        second = await watch.tick("ns", "p")
        assert second is not None and second.reason == "LatencyAboveObjective"
        third = await watch.tick("ns", "p")  # the same totals again: the same verdict, no write
        assert third is not None and third.reason == "LatencyAboveObjective"

    asyncio.run(run())
    slo = rec.store.pipelines[("ns", "p")]["status"]["slo"]
    assert slo["met"] == "False" and slo["deliveries"] == 100 and len(rec.kube.patches) == 2
    assert rec.scheduled == [("pipeline", "ns", "p")] * 2
    cond = condition_of(rec.store.pipelines[("ns", "p")])
    assert cond is not None and (cond.type, cond.status, cond.reason) == ("SLOMet", "False",
                                                                          "LatencyAboveObjective")


def test_watch_leaves_pipelines_without_slo_alone() -> None:
    rec = FakeRec(SPEC)
    watch = SLOWatch(rec, FakeScraper([]))  # type: ignore[arg-type]
    assert asyncio.run(watch.tick("ns", "p")) is None
    assert rec.kube.patches == [] and condition_of(rec.store.pipelines[("ns", "p")]) is None


def test_a_restarted_operator_continues_the_window_from_status_slo_base() -> None:
    from prometheus_client import REGISTRY

    rec = FakeRec({**SPEC, "slo": {"latencyP99": "1s", "successRatio": 0.99, "window": "10m"}})
    texts = [[deliverer_text(0, 0, 0, 0)], [deliverer_text(90, 0, 90, 0)]]
    before = SLOWatch(rec, FakeScraper(texts))  # type: ignore[arg-type]

    async def ticks(watch: SLOWatch, n: int) -> Any:
        for _ in range(n):
            verdict = await watch.tick("ns", "p")
        return verdict

    first = asyncio.run(ticks(before, 2))
    assert first.deliveries == 90 and first.base is not None and first.base.delivered == 0
    stored = rec.store.pipelines[("ns", "p")]["status"]["slo"]
    assert stored["base"]["delivered"] == 0 and stored["base"]["buckets"] == {}  # no ingest series yet
    labels = {"namespace": "ns", "pipeline": "p"}
    assert REGISTRY.get_sample_value("alertpipe_operator_slo_objective_latency_seconds", labels) == 1.0
    assert REGISTRY.get_sample_value("alertpipe_operator_slo_objective_success_ratio", labels) == 0.99

    # a new operator process: no history in memory, the window goes on from the stored base, so the
    # first tick counts the 90 deliveries before the restart and the 10 dead letters after it
    after = SLOWatch(rec, FakeScraper([[deliverer_text(90, 0, 90, 10)]]))  # type: ignore[arg-type]
    again = asyncio.run(ticks(after, 1))
    assert (again.deliveries, again.reason) == (100, "SuccessBelowObjective"), again
    # without the base it would have started again: no data
    fresh = FakeRec({**SPEC, "slo": {"latencyP99": "1s", "successRatio": 0.99, "window": "10m"}})
    alone = SLOWatch(fresh, FakeScraper([[deliverer_text(90, 0, 90, 10)]]))  # type: ignore[arg-type]
    assert asyncio.run(ticks(alone, 1)).reason == "NoData"
    after.forget("ns", "p")
    assert REGISTRY.get_sample_value("alertpipe_operator_slo_objective_latency_seconds", labels) is None


def test_a_base_past_the_window_counts_as_its_start_and_times_alone_write_nothing() -> None:
    from alertpipe.operator.decisions.slo import base_of, same_measurement, seed_of

    history = [(100.0, SLOTotals(1, {1.0: 5.0, float("inf"): 5.0}, 5.0, 1.0)),
               (700.0, SLOTotals(1, {}, 9, 1))]
    base = base_of(history, 700.0, 600.0, NOW)
    assert (base.at, base.buckets, base.delivered) == ("2026-12-03T17:50:00Z", {"1": 5.0, "+Inf": 5.0}, 5.0)
    at, totals = seed_of(base, 50.0, NOW.replace(hour=19), 600.0)  # an hour later: clamped to the window
    assert at == 50.0 - 600.0 and totals.dead_lettered == 1
    assert totals.buckets == {1.0: 5.0, float("inf"): 5.0}
    doc = {"met": "True", "observedAt": "a", "base": {"at": "x", "delivered": 5.0}}
    assert same_measurement(doc, {**doc, "observedAt": "b", "base": {"at": "y", "delivered": 5.0}})
    assert not same_measurement(doc, {**doc, "base": {"at": "x", "delivered": 6.0}})
