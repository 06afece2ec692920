"""The canary step machine: (spec.rollout, status.canary, what was observed) -> the next status.

Pure; the operator's rollout timer (operator/rollouts.py) observes, calls ``advance`` and writes
what it returns, and the reconciler turns the status into the two tracks' config documents
(decisions/tracks.py). Phases:

    Starting ─► Shadow ─► Progressing(step 0..n-1) ─► Promoting ─► Succeeded
        │          └──► WaitingForPromote ──(promote)──┘
        └─ any active phase: abort ─► Aborted; failed analysis (failureLimit) ─► RolledBack

A step moves keys with a *handover*: both tracks evaluate the moving buckets for the warm-up, the
old owner publishing transitions before the cut (event time), the new one from it on. Promotion is
two handovers: the candidate takes every key, then the stable track (now running the candidate's
rules) takes them back, so the stable Deployment keeps its consumer group and checkpoints.
A new candidate revision mid-rollout restarts the rollout; the stable revision is the one recorded
when the rollout started. Pipelines with a rule whose groups span devices are not split by key
(``splittable`` False): they shadow (if asked) and then wait for ``promote``, which swaps at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from alertpipe.operator.decisions.conditions import Want
from alertpipe.operator.rollout_models import (
    AnalysisResult,
    CanaryPhase,
    CanaryStatus,
    Handover,
    RolloutSpec,
    ShadowDiff,
)
from alertpipe.workers.config.durations import parse_duration

__all__ = [
    "ACTIVE",
    "HANDOVER_MARGIN_MS",
    "TERMINAL",
    "Decision",
    "Observation",
    "advance",
    "analysis_due",
    "canary_condition",
]

ACTIVE: frozenset[str] = frozenset({"Starting", "Shadow", "Progressing", "WaitingForPromote", "Promoting"})
TERMINAL: frozenset[str] = frozenset({"Succeeded", "RolledBack", "Aborted"})
HANDOVER_MARGIN_MS = 2000  # after cut + lateness: the old owner's last transitions are out

EventSpec = tuple[str, str, str]  # (Normal | Warning, reason, message)


@dataclass(frozen=True)
class Observation:
    now_ms: int
    candidate_revision: str  # rules revision the spec and rules compile to now
    stable_revision: str  # rules revision the stable track runs (before any rollout of it)
    splittable: bool = True  # no rule spans devices
    candidate_ready: bool = False  # candidate pods available on the candidate config
    warmup_ms: int = 10_000
    lateness_ms: int = 5000
    analysis: AnalysisResult | None = None  # judged now (analysis_due was True), else None
    shadow_diff: ShadowDiff | None = None  # the comparison so far, in Shadow / WaitingForPromote
    old_owner_past_cut: bool = True  # the handover's old owner's watermark passed the cut


@dataclass(frozen=True)
class Decision:
    status: CanaryStatus | None
    events: tuple[EventSpec, ...] = ()


def _ms(d: str) -> int:
    return round(parse_duration(d) * 1000)


def analysis_due(spec: RolloutSpec, st: CanaryStatus | None, now_ms: int) -> bool:
    return st is not None and st.phase in ("Shadow", "Progressing") and now_ms >= st.next_analysis_ms


def _handover(kind: str, a: int, b: int, obs: Observation) -> Handover:
    cut = obs.now_ms + obs.warmup_ms
    return Handover.model_validate(
        {"kind": kind, "fromWeight": a, "toWeight": b, "cutMs": cut,
         "doneMs": cut + obs.lateness_ms + HANDOVER_MARGIN_MS}
    )


def _set(st: CanaryStatus, **kw: object) -> CanaryStatus:
    return st.model_copy(update=kw)


def _phase(st: CanaryStatus, phase: CanaryPhase, now: int, message: str, **kw: object) -> CanaryStatus:
    return _set(st, phase=phase, step_started_ms=now, message=message, **kw)


def _start(spec: RolloutSpec, obs: Observation, restarted: bool) -> Decision:
    st = CanaryStatus(
        phase="Starting", candidate_revision=obs.candidate_revision, stable_revision=obs.stable_revision,
        splittable=obs.splittable, step_started_ms=obs.now_ms,
        message=f"candidate {obs.candidate_revision} starting (stable {obs.stable_revision})",
    )
    if spec.abort:
        st = _phase(st, "Aborted", obs.now_ms, "abort is set: the candidate is not started")
        return Decision(st, (("Warning", "RolloutAborted", st.message),))
    reason, what = ("RolloutRestarted", "the candidate changed mid-rollout; restarting") if restarted else (
        "RolloutStarted", "rollout started")
    return Decision(st, (("Normal", reason, f"{what}: {st.message}"),))


def _first_step(spec: RolloutSpec, st: CanaryStatus, obs: Observation) -> CanaryStatus:
    if not st.splittable:
        return _phase(st, "WaitingForPromote", obs.now_ms,
                      "a rule spans devices: keys cannot be split; set rollout.promote to switch at once")
    w = spec.steps[0].weight
    return _phase(st, "Progressing", obs.now_ms, f"step 1/{len(spec.steps)}: candidate takes {w} %",
                  step=0, weight=w, handover=_handover("advance", 0, w, obs),
                  next_analysis_ms=obs.now_ms + _ms(spec.analysis.interval))


def _promote(st: CanaryStatus, obs: Observation, why: str) -> CanaryStatus:
    if not st.splittable:  # swap in place: the reconciler gives the stable track the new rules
        return _succeeded(st, obs, f"{why}; rules swapped in place (not split by key)")
    return _phase(st, "Promoting", obs.now_ms, f"{why}: the candidate takes every key",
                  weight=100, handover=_handover("toCandidate", st.weight, 100, obs))


def _succeeded(st: CanaryStatus, obs: Observation, message: str) -> CanaryStatus:
    return _phase(st, "Succeeded", obs.now_ms, message, weight=0, handover=None,
                  stable_revision=st.candidate_revision)


def _back(st: CanaryStatus, phase: CanaryPhase, obs: Observation, message: str) -> CanaryStatus:
    return _phase(st, phase, obs.now_ms, message, weight=0, handover=None)


def advance(spec: RolloutSpec, st: CanaryStatus | None, obs: Observation) -> Decision:
    """The next status of the rollout and the Events to post (pure)."""
    now = obs.now_ms
    if st is None or st.phase in TERMINAL:
        if obs.candidate_revision == obs.stable_revision:
            return Decision(st)
        if st is not None and st.candidate_revision == obs.candidate_revision:
            return Decision(st)  # the candidate that was rolled back or aborted stays out
        return _start(spec, obs, restarted=False)
    if obs.candidate_revision != st.candidate_revision:
        if obs.candidate_revision == st.stable_revision:
            out = _back(st, "Aborted", obs, "the spec went back to the stable revision")
            return Decision(out, (("Normal", "RolloutAborted", out.message),))
        return _start(spec, obs.__class__(**{**obs.__dict__, "stable_revision": st.stable_revision}), True)
    if spec.abort:
        out = _back(st, "Aborted", obs, "rollout.abort is set: the stable track takes every key back")
        return Decision(out, (("Warning", "RolloutAborted", out.message),))

    events: list[EventSpec] = []
    if obs.shadow_diff is not None and st.phase in ("Shadow", "WaitingForPromote"):
        st = _set(st, shadow_diff=obs.shadow_diff)
    a = obs.analysis
    if a is not None:
        failed = a.verdict == "fail" or (a.verdict == "noData" and spec.analysis.on_no_data == "fail")
        st = _set(st, last_analysis=a, next_analysis_ms=now + _ms(spec.analysis.interval),
                  failures=st.failures + (1 if failed else 0))
        if failed and st.failures >= spec.analysis.failure_limit:
            out = _back(st, "RolledBack", obs, f"analysis failed: {a.message}")
            return Decision(out, (("Warning", "RolledBack", out.message),))
        if failed:
            events.append(("Warning", "AnalysisFailed",
                           f"{a.message} ({st.failures}/{spec.analysis.failure_limit})"))

    if st.phase == "Starting":
        if not obs.candidate_ready:
            return Decision(st, tuple(events))
        if spec.promote:
            st = _promote(st, obs, "rollout.promote is set")
        elif spec.strategy == "shadow-then-canary":
            st = _phase(st, "Shadow", now, "shadow: the candidate evaluates every key into the shadow topic",
                        next_analysis_ms=now + _ms(spec.analysis.interval))
        else:
            st = _first_step(spec, st, obs)
    elif st.phase == "Shadow":
        if spec.promote:
            st = _promote(st, obs, "rollout.promote is set")
        elif now >= st.step_started_ms + _ms(spec.shadow.duration):
            diff = st.shadow_diff
            if diff is None:
                return Decision(_set(st, message="shadow: waiting for the comparison"), tuple(events))
            if diff.differing > spec.shadow.diff_budget:
                st = _phase(st, "WaitingForPromote", now,
                            f"shadow diff: {diff.differing} transition(s) differ (budget"
                            f" {spec.shadow.diff_budget}); set rollout.promote to go on")
                events.append(("Warning", "ShadowDiff", st.message))
            elif st.splittable:
                st = _first_step(spec, st, obs)
            else:
                st = _promote(st, obs, "shadow clean")
    elif st.phase == "WaitingForPromote":
        if spec.promote:
            st = _promote(st, obs, "rollout.promote is set")
    elif st.phase == "Progressing":
        st = _progress(spec, st, obs)
    elif st.phase == "Promoting":
        st = _promoting(st, obs)
    if st.phase == "Succeeded":
        events.append(("Normal", "Promoted", f"candidate {st.candidate_revision} is stable"))
    return Decision(st, tuple(events))


def _progress(spec: RolloutSpec, st: CanaryStatus, obs: Observation) -> CanaryStatus:
    now = obs.now_ms
    if st.handover is not None:
        if now < st.handover.done_ms:
            return st
        if not obs.old_owner_past_cut:
            return _set(st, message="handover: waiting for the old owner's watermark to pass the cut")
        st = _set(st, handover=None, step_started_ms=now, message=f"candidate owns {st.weight} %")
    if spec.promote:
        return _promote(st, obs, "rollout.promote is set")
    last = st.last_analysis
    if last is not None and last.verdict == "noData" and spec.analysis.on_no_data == "pause":
        return _set(st, message=f"paused at {st.weight} %: {last.message}")
    if now < st.step_started_ms + _ms(spec.steps[st.step].pause):
        return st
    judged_at = st.next_analysis_ms - _ms(spec.analysis.interval)
    healthy = last is not None and (last.verdict == "pass" or (
        last.verdict == "noData" and spec.analysis.on_no_data == "pass"))
    if not healthy or judged_at < st.step_started_ms:
        return st  # not judged healthy at this weight yet
    if st.step + 1 >= len(spec.steps):
        return _promote(st, obs, f"healthy through {len(spec.steps)} step(s)")
    i = st.step + 1
    w = spec.steps[i].weight
    return _phase(st, "Progressing", now, f"step {i + 1}/{len(spec.steps)}: candidate takes {w} %",
                  step=i, weight=w, handover=_handover("advance", st.weight, w, obs))


def _promoting(st: CanaryStatus, obs: Observation) -> CanaryStatus:
    h = st.handover
    if h is None:
        return _promote(st, obs, "promoting")
    if obs.now_ms < h.done_ms:
        return st
    if not obs.old_owner_past_cut:
        return _set(st, message="handover: waiting for the old owner's watermark to pass the cut")
    if h.kind == "toCandidate":
        return _phase(st, "Promoting", obs.now_ms, "the stable track takes every key back on the new rules",
                      handover=_handover("toStable", 0, 100, obs))
    return _succeeded(st, obs, f"candidate {st.candidate_revision} promoted")


def canary_condition(st: CanaryStatus | None) -> Want | None:
    """The Canary condition of a pipeline; None when no rollout ever ran."""
    if st is None:
        return None
    if st.phase in ACTIVE:
        return Want("Canary", "True", st.phase, f"weight {st.weight} %: {st.message}")
    reason = {"Succeeded": "Promoted", "RolledBack": "RolledBack", "Aborted": "Aborted"}[st.phase]
    return Want("Canary", "False", reason, st.message)
