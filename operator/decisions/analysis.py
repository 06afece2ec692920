"""Canary analysis: the tracks' evaluator metrics (Prometheus text, summed over a track's pods) turned
into per-interval samples and judged against spec.rollout.analysis. Pure: the scraping is in
operator/scrape.py.

Judged for the candidate: ingest-to-alert latency p99 (from the histogram's bucket deltas), late
and dead-letter ratios, consumer lag, and its alerts per evaluated event against the stable
track's (a rule that suddenly fires ten times as often is a bad rule). No answering pod, or no
event consumed in the interval, is *no data* (a silent canary must not pass by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from alertpipe.operator.rollout_models import AnalysisResult, AnalysisSpec
from alertpipe.workers.config.durations import format_duration, parse_duration

__all__ = ["Sample", "Totals", "judge", "past", "sample", "totals"]

_COUNTERS = {
    "alertpipe_evaluator_events_consumed": "consumed",
    "alertpipe_evaluator_events_evaluated": "evaluated",
    "alertpipe_evaluator_events_late": "late",
    "alertpipe_evaluator_events_malformed": "malformed",
    "alertpipe_evaluator_events_skipped": "skipped",
    "alertpipe_evaluator_alerts": "alerts",
}
MIN_EVENTS_FOR_RATIO = 10  # fewer evaluated events than this: the alert ratio is not judged


@dataclass(frozen=True)
class Totals:
    """Cumulative counters of one track (summed over its pods) at one scrape."""

    pods: int = 0
    counters: Mapping[str, float] = field(default_factory=dict)
    lag: float = 0.0
    assigned: float = 0.0  # events partitions the track's consumers hold
    watermark_delays: tuple[float, ...] = ()  # seconds behind the wall clock, per partition
    latency_buckets: Mapping[float, float] = field(default_factory=dict)  # le -> cumulative count


@dataclass(frozen=True)
class Sample:
    """One track over one analysis interval (counter deltas)."""

    pods: int
    consumed: float = 0.0
    evaluated: float = 0.0
    late: float = 0.0
    malformed: float = 0.0
    alerts: float = 0.0
    lag: float = 0.0
    p99: float | None = None  # seconds; None: no alert in the interval


def totals(texts: Iterable[str]) -> Totals:
    """Sum the evaluator metrics of a track's pods (each text one pod's /metrics)."""
    counters: dict[str, float] = dict.fromkeys(_COUNTERS.values(), 0.0)
    buckets: dict[float, float] = {}
    lag = assigned = 0.0
    delays: list[float] = []
    pods = 0
    for text in texts:
        pods += 1
        for fam in text_string_to_metric_families(text):
            key = _COUNTERS.get(fam.name.removesuffix("_total"))
            for s in fam.samples:
                if key is not None and s.name.endswith("_total"):
                    counters[key] += s.value
                elif fam.name == "alertpipe_evaluator_consumer_lag_messages":
                    lag += s.value
                elif fam.name == "alertpipe_evaluator_assigned_partitions":
                    assigned += s.value
                elif fam.name == "alertpipe_evaluator_watermark_delay_seconds":
                    delays.append(s.value)
                elif (fam.name == "alertpipe_evaluator_event_to_alert_seconds" and s.name.endswith("_bucket")
                      and s.labels.get("basis") == "ingest_time"):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    return Totals(pods=pods, counters=counters, lag=lag, assigned=assigned, latency_buckets=buckets,
                  watermark_delays=tuple(delays))


IDLE_DELAY_S = 120.0  # a partition this far behind is idle or gone, not slow: it holds nothing back
GAUGE_AGE_S = 1.0  # the gauge is set once a second: it may be this much older than the scrape


def past(t: Totals, cut_ms: int, now_ms: int) -> bool:
    """Every partition of this track has a watermark at or after ``cut_ms`` (event time): all of its
    transitions before the cut are out. No answering pod: True (nobody is left to publish them; a
    handover must not wait forever for a track that is gone)."""
    if t.pods == 0:
        return True
    live = [d for d in t.watermark_delays if d < IDLE_DELAY_S]
    return all(now_ms - (d + GAUGE_AGE_S) * 1000 >= cut_ms for d in live)


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now  # a restarted pod starts its counters again


def _quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """histogram_quantile over cumulative buckets (linear inside a bucket, like Prometheus)."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            span = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / span if span else 1.0)
        lower_le, lower_count = le, count
    return lower_le


def sample(before: Totals, now: Totals) -> Sample:
    c0, c1 = before.counters, now.counters
    d = {k: _delta(c1.get(k, 0.0), c0.get(k, 0.0)) for k in _COUNTERS.values()}
    buckets = {le: _delta(v, before.latency_buckets.get(le, 0.0)) for le, v in now.latency_buckets.items()}
    return Sample(pods=now.pods, consumed=d["consumed"], evaluated=d["evaluated"], late=d["late"],
                  malformed=d["malformed"], alerts=d["alerts"], lag=now.lag, p99=_quantile(0.99, buckets))


def _rate(alerts: float, evaluated: float) -> float:
    return (alerts + 1.0) / (evaluated + 1.0)


def judge(spec: AnalysisSpec, stable: Sample | None, candidate: Sample | None, at: str) -> AnalysisResult:
    """pass, fail (naming the first metric over its threshold and its value) or noData."""
    if candidate is None or candidate.pods == 0:
        return AnalysisResult(at=at, verdict="noData",
                              message="no candidate pod answered on its metrics port")
    values = {"consumed": candidate.consumed, "evaluated": candidate.evaluated, "alerts": candidate.alerts,
              "lag": candidate.lag}
    if candidate.consumed <= 0:
        return AnalysisResult(at=at, verdict="noData", values=values,
                              message="the candidate consumed no events in the interval")
    checks: list[tuple[str, float, float, str]] = []  # (name, value, limit, shown value)
    configured = sum(x is not None for x in (spec.max_event_to_alert_p99, spec.max_late_ratio,
                                             spec.max_dead_letter_ratio, spec.max_consumer_lag,
                                             spec.max_alert_ratio))
    if spec.max_event_to_alert_p99 is not None and candidate.p99 is not None:
        limit = parse_duration(spec.max_event_to_alert_p99)
        values["eventToAlertP99"] = candidate.p99
        checks.append(("maxEventToAlertP99", candidate.p99, limit,
                       f"{candidate.p99:.3g}s > {format_duration(limit)}"))
    if spec.max_late_ratio is not None:
        r = candidate.late / max(1.0, candidate.evaluated + candidate.late)
        values["lateRatio"] = r
        checks.append(("maxLateRatio", r, spec.max_late_ratio, f"{r:.3g} > {spec.max_late_ratio:g}"))
    if spec.max_dead_letter_ratio is not None:
        r = candidate.malformed / max(1.0, candidate.consumed)
        values["deadLetterRatio"] = r
        checks.append(("maxDeadLetterRatio", r, spec.max_dead_letter_ratio,
                       f"{r:.3g} > {spec.max_dead_letter_ratio:g}"))
    if spec.max_consumer_lag is not None:
        checks.append(("maxConsumerLag", candidate.lag, float(spec.max_consumer_lag),
                       f"{candidate.lag:.0f} > {spec.max_consumer_lag}"))
    if (spec.max_alert_ratio is not None and stable is not None and stable.pods > 0
            and candidate.evaluated >= MIN_EVENTS_FOR_RATIO):
        r = _rate(candidate.alerts, candidate.evaluated) / _rate(stable.alerts, stable.evaluated)
        values["alertRatio"] = r
        checks.append(("maxAlertRatio", r, spec.max_alert_ratio, f"{r:.3g} > {spec.max_alert_ratio:g}"))
    for name, value, limit, shown in checks:
        if value > limit:
            return AnalysisResult(at=at, verdict="fail", values=values, message=f"{name}: {shown}")
    if configured and not checks:  # e.g. no alert for a latency p99, too few events for a ratio
        return AnalysisResult(at=at, verdict="noData", values=values, message="too little traffic to judge"
                              f" ({candidate.evaluated:.0f} event(s) evaluated)")
    return AnalysisResult(at=at, verdict="pass", values=values,
                          message=f"healthy: {len(checks)} check(s) over {candidate.consumed:.0f} event(s)")
