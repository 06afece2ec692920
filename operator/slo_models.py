"""The per-tenant SLO of an AlertPipeline: the objective (spec.slo) and what the operator measured
(status.slo), kept beside models.py like the rollout's models (rollout_models.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.durations import Duration

__all__ = ["SLOBase", "SLOSpec", "SLOStatus"]


class SLOSpec(Model):
    """The pipeline's objective, judged over a sliding window from the deliverers' metrics."""

    latency_p99: Duration = Field(
        "1s", description="p99 of end-to-end latency (event ingest to the receiver's 2xx) stays at or below.",
    )
    success_ratio: float = Field(
        0.99, gt=0, le=1, description="Delivered / (delivered + dead-lettered) must stay at or above."
    )
    window: Duration = Field("10m", description="The sliding window both are measured over.")


class SLOBase(Model):
    """The deliverers' cumulative totals the window counts from, so that a restarted operator
    continues the window instead of starting it again."""

    at: str = Field(description="When these totals were scraped (RFC 3339).")
    delivered: float = Field(0.0, description="alertpipe_deliverer_deliveries_total, delivered, summed.")
    dead_lettered: float = Field(0.0, description="... dead_lettered, summed over the deliverer pods.")
    buckets: dict[str, float] = Field(
        default_factory=dict, description="alertpipe_e2e_latency_seconds buckets (le -> cumulative count)."
    )


class SLOStatus(Model):
    """The last measurement, and whether it met spec.slo (the SLOMet condition says the same)."""

    met: Literal["True", "False", "Unknown"] = Field(description="True, False, or Unknown (no data).")
    reason: str = Field(description="SLOMet, LatencyAboveObjective, SuccessBelowObjective, NoData, ...")
    message: str = Field("", description="The figures against the objective, for a human.")
    window: str = Field(description="The window the figures cover (at most spec.slo.window).")
    latency_p99_seconds: float | None = Field(None, description="e2e latency p99 over the window.")
    success_ratio: float | None = Field(None, description="Delivered / (delivered + dead-lettered).")
    deliveries: int = Field(0, description="Terminal deliveries (delivered + dead-lettered) in the window.")
    observed_at: str = Field(description="When measured (RFC 3339).")
    base: SLOBase | None = Field(None, description="Where the window starts (a restart continues from it).")
