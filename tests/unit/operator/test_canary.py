"""The canary step machine: steps, pauses, analysis pass / fail / no data, abort, promote, restarts."""

from __future__ import annotations

from typing import Any

import pytest

from alertpipe.operator.decisions.canary import (
    HANDOVER_MARGIN_MS,
    Observation,
    advance,
    analysis_due,
    canary_condition,
)
from alertpipe.operator.rollout_models import AnalysisResult, CanaryStatus, RolloutSpec, ShadowDiff

pytestmark = pytest.mark.unit

WARM, LATE = 3000, 1000
HANDOVER = WARM + LATE + HANDOVER_MARGIN_MS


def spec(**kw: Any) -> RolloutSpec:
    base: dict[str, Any] = {
        "steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
        "analysis": {"interval": "5s", "failureLimit": 2},
    }
    base.update(kw)
    return RolloutSpec.model_validate(base)


def obs(now: int, **kw: Any) -> Observation:
    base: dict[str, Any] = {"now_ms": now, "candidate_revision": "new", "stable_revision": "old",
                            "candidate_ready": True, "warmup_ms": WARM, "lateness_ms": LATE}
    base.update(kw)
    return Observation(**base)


def ok(now: int) -> AnalysisResult:
    return AnalysisResult(at=str(now), verdict="pass", message="healthy")


def bad(now: int) -> AnalysisResult:
    return AnalysisResult(at=str(now), verdict="fail", message="maxEventToAlertP99: 4s > 1s")


def nodata(now: int) -> AnalysisResult:
    return AnalysisResult(at=str(now), verdict="noData", message="the candidate consumed no events")


class Run:
    """Drives the machine like the timer does: every tick, an analysis whenever one is due."""

    def __init__(self, s: RolloutSpec, verdict: Any = ok) -> None:
        self.spec, self.verdict, self.now = s, verdict, 1_000_000
        self.st: CanaryStatus | None = None
        self.events: list[tuple[str, str, str]] = []
        self.seen: list[tuple[str, int]] = []

    def tick(self, dt: int = 1000, **kw: Any) -> CanaryStatus | None:
        self.now += dt
        a = self.verdict(self.now) if analysis_due(self.spec, self.st, self.now) else None
        d = advance(self.spec, self.st, obs(self.now, analysis=a, **kw))
        self.st = d.status
        self.events += d.events
        if self.st is not None and (not self.seen or self.seen[-1] != (self.st.phase, self.st.weight)):
            self.seen.append((self.st.phase, self.st.weight))
        return self.st

    def until(self, phase: str, limit: int = 500, **kw: Any) -> CanaryStatus:
        for _ in range(limit):
            st = self.tick(**kw)
            if st is not None and st.phase == phase:
                return st
        raise AssertionError(f"never reached {phase}: {self.seen}")


def test_nothing_to_roll_out_when_candidate_is_stable() -> None:
    assert advance(spec(), None, obs(1, candidate_revision="old")).status is None


def test_healthy_rollout_walks_every_step_then_promotes_with_two_handovers() -> None:
    r = Run(spec())
    st = r.until("Succeeded")
    assert r.seen == [("Starting", 0), ("Progressing", 10), ("Progressing", 50), ("Promoting", 100),
                      ("Succeeded", 0)]
    assert st.stable_revision == "new" and st.handover is None
    assert [e[1] for e in r.events] == ["RolloutStarted", "Promoted"]
    cond = canary_condition(st)
    assert cond is not None and (cond.status, cond.reason) == ("False", "Promoted")


def test_a_step_holds_its_pause_after_the_handover_and_needs_a_fresh_pass() -> None:
    r = Run(spec())
    r.until("Progressing")
    st = r.st
    assert st is not None and st.handover is not None
    h = st.handover
    assert (h.kind, h.from_weight, h.to_weight) == ("advance", 0, 10)
    assert h.cut_ms == r.now + WARM and h.done_ms == h.cut_ms + LATE + HANDOVER_MARGIN_MS
    start = r.now
    r.until("Progressing")
    while r.st is not None and r.st.weight == 10:
        r.tick()
    # the handover, then the full 10 s pause: never earlier
    assert r.now - start >= HANDOVER + 10_000


def test_failed_analysis_rolls_back_at_the_failure_limit() -> None:
    r = Run(spec(), verdict=bad)
    st = r.until("RolledBack")
    assert st.weight == 0 and st.handover is None and st.failures == 2
    assert "maxEventToAlertP99: 4s > 1s" in st.message
    assert [e[1] for e in r.events] == ["RolloutStarted", "AnalysisFailed", "RolledBack"]
    cond = canary_condition(st)
    assert cond is not None and (cond.status, cond.reason) == ("False", "RolledBack")
    assert "4s > 1s" in cond.message
    # the same candidate is not retried; a new one starts a new rollout
    assert advance(spec(), st, obs(r.now + 1)).status == st
    again = advance(spec(), st, obs(r.now + 1, candidate_revision="newer")).status
    assert again is not None and again.phase == "Starting" and again.failures == 0


@pytest.mark.parametrize(("policy", "outcome"), [("fail", "RolledBack"), ("pass", "Succeeded")])
def test_no_data_fails_by_default_or_passes_when_told(policy: str, outcome: str) -> None:
    r = Run(spec(analysis={"interval": "5s", "failureLimit": 1, "onNoData": policy}), verdict=nodata)
    assert r.until(outcome).phase == outcome


def test_no_data_with_pause_holds_the_step_until_data_comes() -> None:
    s = spec(analysis={"interval": "5s", "failureLimit": 1, "onNoData": "pause"})
    r = Run(s, verdict=nodata)
    r.until("Progressing")
    for _ in range(120):
        r.tick()
    assert r.st is not None and (r.st.phase, r.st.weight) == ("Progressing", 10)
    assert r.st.message.startswith("paused at 10 %")
    r.verdict = ok
    assert r.until("Succeeded").phase == "Succeeded"


def test_abort_mid_rollout_hands_every_key_back() -> None:
    r = Run(spec())
    r.until("Progressing")
    r.spec = spec(abort=True)
    st = r.tick()
    assert st is not None and (st.phase, st.weight, st.handover) == ("Aborted", 0, None)
    assert r.events[-1][:2] == ("Warning", "RolloutAborted")


def test_promote_skips_the_remaining_steps() -> None:
    r = Run(spec())
    r.until("Progressing")
    r.spec = spec(promote=True)
    assert r.until("Succeeded").stable_revision == "new"
    assert ("Progressing", 50) not in r.seen


def test_a_new_candidate_mid_rollout_restarts_against_the_recorded_stable() -> None:
    r = Run(spec())
    r.until("Progressing")
    st = r.tick(candidate_revision="newer", stable_revision="whatever-the-configmap-says")
    assert st is not None and (st.phase, st.weight, st.candidate_revision) == ("Starting", 0, "newer")
    assert st.stable_revision == "old"
    assert r.events[-1][1] == "RolloutRestarted"
    # and a spec that goes back to the stable revision ends the rollout
    st = r.tick(candidate_revision="old")
    assert st is not None and st.phase == "Aborted"


def test_starting_waits_for_the_candidate_to_be_ready() -> None:
    r = Run(spec())
    for _ in range(30):
        r.tick(candidate_ready=False)
    assert r.st is not None and r.st.phase == "Starting"
    assert r.until("Progressing").weight == 10


def test_shadow_with_a_clean_diff_goes_on_to_the_steps() -> None:
    s = spec(strategy="shadow-then-canary", shadow={"duration": "20s"})
    r = Run(s)
    clean = ShadowDiff(both=12)
    r.until("Shadow", shadow_diff=clean)
    assert r.until("Progressing", shadow_diff=clean).weight == 10


def test_shadow_diff_over_budget_waits_for_promote() -> None:
    s = spec(strategy="shadow-then-canary", shadow={"duration": "20s", "diffBudget": 1})
    diff = ShadowDiff(both=3, only_candidate=2, examples=["only-candidate hot abc firing"])
    r = Run(s)
    st = r.until("WaitingForPromote", shadow_diff=diff)
    assert st.shadow_diff == diff and "2 transition(s) differ" in st.message
    assert r.events[-1][1] == "ShadowDiff"
    for _ in range(50):
        r.tick(shadow_diff=diff)
    assert r.st is not None and r.st.phase == "WaitingForPromote"
    r.spec = spec(strategy="shadow-then-canary", shadow={"duration": "20s", "diffBudget": 1}, promote=True)
    assert r.until("Succeeded").phase == "Succeeded"


def test_unsplittable_rules_never_get_weights_and_swap_at_promote() -> None:
    r = Run(spec())
    st = r.until("WaitingForPromote", splittable=False)
    assert st.weight == 0 and "spans devices" in st.message
    r.spec = spec(promote=True)
    st = r.until("Succeeded", splittable=False)
    assert ("Promoting", 100) not in r.seen and st.stable_revision == "new"


def test_condition_is_true_while_active() -> None:
    r = Run(spec())
    st = r.until("Progressing")
    cond = canary_condition(st)
    assert cond is not None and (cond.type, cond.status, cond.reason) == ("Canary", "True", "Progressing")
    assert canary_condition(None) is None


def test_steps_must_increase() -> None:
    with pytest.raises(ValueError, match="must increase"):
        spec(steps=[{"weight": 50}, {"weight": 10}])


def test_a_handover_waits_for_the_old_owner_to_pass_the_cut() -> None:
    r = Run(spec())
    r.until("Progressing")
    assert r.st is not None and r.st.handover is not None
    for _ in range(HANDOVER // 1000 + 20):
        r.tick(old_owner_past_cut=False)
    assert r.st is not None and r.st.handover is not None and "watermark" in r.st.message
    r.tick()
    assert r.st is not None and r.st.handover is None


def test_watermarks_past_the_cut() -> None:
    from alertpipe.operator.decisions.analysis import Totals, past

    now = 100_000
    assert past(Totals(pods=1, watermark_delays=(2.0, 3.0)), cut_ms=now - 5000, now_ms=now)
    assert not past(Totals(pods=1, watermark_delays=(2.0, 30.0)), cut_ms=now - 5000, now_ms=now)
    assert past(Totals(pods=1, watermark_delays=(2.0, 500.0)), cut_ms=now - 5000, now_ms=now)  # idle
    assert past(Totals(pods=0), cut_ms=now, now_ms=now)  # a track that is gone holds nothing back
