"""The per-tenant SLO verdict: the deliverers' metrics (Prometheus text, summed over the pods)
turned into e2e latency p99 and delivery success over spec.slo.window, judged against spec.slo.
Pure: the scraping and the status write are in operator/slo.py.

Latency is the deliverer's ``alertpipe_e2e_latency_seconds{basis="ingest"}`` (event ingest to the
receiver's 2xx); success is delivered / (delivered + dead-lettered) from
``alertpipe_deliverer_deliveries_total`` (muted and already-delivered decisions are neither). No
terminal delivery in the window is *no data* (Unknown), never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from alertpipe.operator.decisions.analysis import _delta, _quantile
from alertpipe.operator.decisions.conditions import Want, rfc3339
from alertpipe.operator.slo_models import SLOBase, SLOSpec, SLOStatus
from alertpipe.workers.config.durations import format_duration, parse_duration

__all__ = [
    "SLOTotals",
    "base_of",
    "judge_slo",
    "same_measurement",
    "seed_of",
    "slo_condition",
    "slo_totals",
    "window_base",
]

E2E = "alertpipe_e2e_latency_seconds"
DELIVERIES = "alertpipe_deliverer_deliveries"


@dataclass(frozen=True)
class SLOTotals:
    """Cumulative deliverer counters of one pipeline (summed over its pods) at one scrape."""

    pods: int = 0
    buckets: Mapping[float, float] = field(default_factory=dict)  # le -> cumulative count
    delivered: float = 0.0
    dead_lettered: float = 0.0


def slo_totals(texts: Iterable[str]) -> SLOTotals:
    """Sum the SLO's series of the deliverer pods' /metrics texts."""
    buckets: dict[float, float] = {}
    delivered = dead = 0.0
    pods = 0
    for text in texts:
        pods += 1
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if fam.name == E2E and s.name.endswith("_bucket") and s.labels.get("basis") == "ingest":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif fam.name == DELIVERIES and s.name.endswith("_total"):
                    if s.labels.get("decision") == "delivered":
                        delivered += s.value
                    elif s.labels.get("decision") == "dead_lettered":
                        dead += s.value
    return SLOTotals(pods, buckets, delivered, dead)


def window_base(history: Sequence[tuple[float, SLOTotals]], now_s: float, window_s: float) -> int:
    """Index of the sample the window is measured from: the oldest one not older than the window
    (the oldest there is while the history is shorter than the window)."""
    for i, (at, _) in enumerate(history):
        if now_s - at <= window_s:
            return i
    return len(history) - 1


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.4g} %"


def judge_slo(
    spec: SLOSpec, history: Sequence[tuple[float, SLOTotals]], now_s: float, now: datetime
) -> SLOStatus:
    """The verdict over the window ending at the last sample of ``history`` (oldest first)."""
    window_s = parse_duration(spec.window)
    base_at, base = history[window_base(history, now_s, window_s)]
    last = history[-1][1]
    covered = format_duration(max(0.0, round(now_s - base_at))) if now_s > base_at else "0s"
    common = {"window": covered, "observed_at": rfc3339(now)}
    if last.pods == 0:
        return SLOStatus(met="Unknown", reason="NoDeliverer", message="no deliverer pod answered", **common)
    delivered = _delta(last.delivered, base.delivered)
    dead = _delta(last.dead_lettered, base.dead_lettered)
    buckets = {le: _delta(v, base.buckets.get(le, 0.0)) for le, v in last.buckets.items()}
    p99 = _quantile(0.99, buckets)
    total = delivered + dead
    if total <= 0:
        message = f"no delivery in the last {covered}"
        return SLOStatus(met="Unknown", reason="NoData", message=message, **common)
    ratio = delivered / total
    objective_s = parse_duration(spec.latency_p99)
    misses = []
    if p99 is not None and p99 > objective_s:
        misses.append(("LatencyAboveObjective", f"p99 {p99:.3g} s above the {spec.latency_p99} objective"))
    if ratio < spec.success_ratio:
        misses.append(("SuccessBelowObjective",
                       f"success {_pct(ratio)} below the {_pct(spec.success_ratio)} objective"))
    figures = (f"p99 {'n/a' if p99 is None else f'{p99:.3g} s'}, success {_pct(ratio)},"
               f" {int(total)} deliveries over {covered}")
    if misses:
        reason = misses[0][0] if len(misses) == 1 else "LatencyAndSuccessOffObjective"
        message = "; ".join(m for _, m in misses) + f" ({figures})"
        met = "False"
    else:
        reason, met = "ObjectiveMet", "True"
        message = f"{figures}: within p99 <= {spec.latency_p99}, success >= {_pct(spec.success_ratio)}"
    return SLOStatus(met=met, reason=reason, message=message, latency_p99_seconds=None if p99 is None
                     else round(p99, 4), success_ratio=round(ratio, 6), deliveries=int(total), **common)


def slo_condition(status: SLOStatus | None) -> Want | None:
    """The SLOMet condition from status.slo; None while the pipeline has no spec.slo measured."""
    if status is None:
        return None
    return Want("SLOMet", status.met, status.reason, status.message)


# --- the window across an operator restart (status.slo.base) ---------------------------------------


def base_of(history: Sequence[tuple[float, SLOTotals]], now_s: float, window_s: float,
            now: datetime) -> SLOBase:
    """The sample the window counts from, as status.slo.base (its wall time from its age)."""
    at, totals = history[window_base(history, now_s, window_s)]
    scraped = datetime.fromtimestamp(now.timestamp() - max(0.0, now_s - at), tz=UTC)
    return SLOBase(at=rfc3339(scraped), delivered=totals.delivered, dead_lettered=totals.dead_lettered,
                   buckets={_le_text(le): v for le, v in sorted(totals.buckets.items())})


def seed_of(base: SLOBase, now_s: float, now: datetime, window_s: float) -> tuple[float, SLOTotals]:
    """A history sample from status.slo.base for an operator that has none (it restarted): dated by
    its age, at most the window (the base was written while it was the window's start; a longer
    gap since then counts as if the window began at the base)."""
    try:
        scraped = datetime.strptime(base.at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        age = min(max(0.0, (now - scraped).total_seconds()), window_s)
    except ValueError:
        age = 0.0
    buckets = {float(le): v for le, v in base.buckets.items()}
    return now_s - age, SLOTotals(0, buckets, base.delivered, base.dead_lettered)


def same_measurement(old: Mapping[str, object], new: Mapping[str, object]) -> bool:
    """Whether two status.slo documents say the same: the time of measuring and of the base sample
    alone are no reason to write (a window whose totals do not move writes nothing)."""

    def key(doc: Mapping[str, object]) -> dict[str, object]:
        out = {k: v for k, v in doc.items() if k not in ("observedAt", "base")}
        base = doc.get("base")
        if isinstance(base, Mapping):
            out["base"] = {k: v for k, v in base.items() if k != "at"}
        return out

    return key(old) == key(new)


def _le_text(le: float) -> str:
    return "+Inf" if le == float("inf") else f"{le:g}"
