"""The CRD models of canary rollouts: ``spec.rollout`` (steps, shadow, analysis, promote / abort)
and ``status.canary`` (phase, weight, step, revisions, shadow diff, last analysis).

Kept apart from models.py so the rollout's fields stay one import away from the kinds that carry
them; the semantics are in docs/operator.md (Rollouts) and decisions/canary.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.durations import Duration

__all__ = [
    "AnalysisResult",
    "AnalysisSpec",
    "CanaryPhase",
    "CanaryStatus",
    "Handover",
    "RolloutSpec",
    "RolloutStep",
    "RuleDiff",
    "ShadowDiff",
    "ShadowSpec",
]


class RolloutStep(Model):
    """One canary step: the candidate evaluates ``weight`` % of the keys for at least ``pause``."""

    weight: int = Field(ge=1, le=99, description="Percent of the key buckets the candidate owns.")
    pause: Duration = Field("1m", description="How long the step holds (with healthy analysis).")


class ShadowSpec(Model):
    """Shadow mode: the candidate evaluates every key and writes to a shadow topic nobody delivers."""

    duration: Duration = Field("10m", description="How long the shadow comparison runs.")
    diff_budget: int = Field(
        0, ge=0, description="Differing alert transitions that still let the rollout go on without promote."
    )


class AnalysisSpec(Model):
    """SLO thresholds the candidate track must meet, judged every ``interval`` from worker metrics."""

    interval: Duration = Field("1m", description="How often the tracks' metrics are judged.")
    failure_limit: int = Field(1, ge=1, le=100, description="Failed analyses that roll back.")
    on_no_data: Literal["fail", "pause", "pass"] = Field(
        "fail", description="A silent candidate (no metrics, no events): fail, pause the step, or pass."
    )
    max_event_to_alert_p99: Duration | None = Field(
        None, description="Ingest-to-alert latency p99 of the candidate's alerts."
    )
    max_late_ratio: float | None = Field(None, ge=0, le=1, description="Late events / evaluated events.")
    max_dead_letter_ratio: float | None = Field(
        None, ge=0, le=1, description="Malformed (dead-lettered) events / consumed events."
    )
    max_consumer_lag: int | None = Field(None, ge=0, description="Candidate consumer lag (messages).")
    max_alert_ratio: float | None = Field(
        None, gt=0, description="Candidate alerts per evaluated event / the stable track's (rule quality)."
    )


class RolloutSpec(Model):
    """How a new candidate (rule set and/or evaluator image) reaches every key."""

    strategy: Literal["canary", "shadow-then-canary"] = Field(
        "canary", description="canary, or shadow-then-canary (a shadow comparison first)."
    )
    steps: list[RolloutStep] = Field(
        default_factory=lambda: [RolloutStep(weight=10, pause="5m"), RolloutStep(weight=50, pause="5m")],
        min_length=1,
        max_length=20,
        description="Weights in increasing order; 100 is the final promotion.",
    )
    warmup: Duration | None = Field(
        None,
        description="How long both tracks evaluate keys being handed over; omitted: the longest rule"
        " window / for / absence plus the allowed lateness, at least 10s.",
    )
    shadow: ShadowSpec = Field(default_factory=ShadowSpec, description="Shadow mode settings.")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec, description="SLO analysis.")
    promote: bool = Field(False, description="Skip the remaining steps and promote the candidate.")
    abort: bool = Field(False, description="Stop the rollout: the stable track takes every key back.")

    @model_validator(mode="after")
    def _increasing(self) -> RolloutSpec:
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
            raise ValueError(f"rollout.steps weights must increase (got {weights})")
        return self


CanaryPhase = Literal[
    "Starting", "Shadow", "Progressing", "WaitingForPromote", "Promoting",
    "Succeeded", "RolledBack", "Aborted",
]


class Handover(Model):
    """Keys moving between tracks: both evaluate buckets [fromWeight, toWeight) %; alerts before
    ``cutMs`` (event time) come from the old owner, from it on from the new one."""

    kind: Literal["advance", "toCandidate", "toStable"] = Field(description="Which way keys move.")
    from_weight: int = Field(ge=0, le=100, description="Lower bound of the moving range (percent).")
    to_weight: int = Field(ge=0, le=100, description="Upper bound of the moving range (percent).")
    cut_ms: int = Field(description="Event time of the cut.")
    done_ms: int = Field(description="Wall clock after which the old owner drops the range.")


class RuleDiff(Model):
    both: int = Field(0, description="Transitions both tracks produced.")
    only_stable: int = Field(0, description="Transitions only the stable track produced.")
    only_candidate: int = Field(0, description="Transitions only the candidate produced.")


class ShadowDiff(Model):
    """The verdict diff of a shadow comparison, by rule, with example alert ids."""

    both: int = Field(0, description="Transitions both tracks produced.")
    only_stable: int = Field(0, description="Transitions only the stable track produced.")
    only_candidate: int = Field(0, description="Transitions only the candidate produced.")
    by_rule: dict[str, RuleDiff] = Field(default_factory=dict, description="The same counts per rule.")
    examples: list[str] = Field(
        default_factory=list, description="A few differing transitions: 'only-candidate rule id status'."
    )
    since_ms: int | None = Field(None, description="Event time the comparison starts at.")
    until_ms: int | None = Field(None, description="Event time the comparison is complete to.")

    @property
    def differing(self) -> int:
        return self.only_stable + self.only_candidate


class AnalysisResult(Model):
    at: str = Field(description="When it was judged (RFC 3339).")
    verdict: Literal["pass", "fail", "noData"] = Field(description="pass, fail or noData.")
    message: str = Field("", description="The metric and value that failed, or what was seen.")
    values: dict[str, float] = Field(default_factory=dict, description="Measured values.")


class CanaryStatus(Model):
    """Where a rollout stands (the state of the step machine, decisions/canary.py)."""

    phase: CanaryPhase = Field(description="Starting, Shadow, Progressing, WaitingForPromote, ...")
    weight: int = Field(0, ge=0, le=100, description="Percent of the keys the candidate owns.")
    step: int = Field(-1, description="Index in spec.rollout.steps; -1 before the first.")
    candidate_revision: str = Field(description="Rules revision of the candidate.")
    stable_revision: str = Field(description="Rules revision of the stable track.")
    splittable: bool = Field(True, description="False when a rule spans devices: no weighted steps.")
    step_started_ms: int = Field(0, description="Wall clock the phase or step started.")
    handover: Handover | None = Field(None, description="Keys moving between tracks right now.")
    failures: int = Field(0, description="Failed analyses in this rollout.")
    next_analysis_ms: int = Field(0, description="When the next analysis is due.")
    shadow_diff: ShadowDiff | None = Field(None, description="The shadow comparison so far.")
    last_analysis: AnalysisResult | None = Field(None, description="The latest analysis.")
    message: str = Field("", description="What happened last, for a human.")
