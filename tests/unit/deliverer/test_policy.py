"""Backoff, retry budget, classification, token bucket, circuit breaker and commit frontier."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.deliverer.kafka_io import PartitionTracker
from alertpipe.workers.deliverer.policy import (
    CircuitBreaker,
    RetryBudget,
    TokenBucket,
    backoff_delay,
    classify_http_status,
    commit_frontier,
    decide_retry,
    parse_retry_after,
)

pytestmark = pytest.mark.unit

BUDGET = RetryBudget(max_attempts=5, max_age=60.0, initial_backoff=0.2, max_backoff=10.0)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (301, "permanent"),
        (400, "permanent"),
        (401, "permanent"),
        (403, "permanent"),
        (404, "permanent"),
        (408, "retry"),
        (413, "permanent"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
    ],
)
def test_classify(status: int, verdict: str) -> None:
    assert classify_http_status(status) == verdict


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("3", 0.0) == 3.0
    assert parse_retry_after(" 1.5 ", 0.0) == 1.5
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after("-1", 0.0) is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0


def test_full_jitter_bounds() -> None:
    assert backoff_delay(1, 0.2, 10.0, lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(3, 0.2, 10.0, lambda: 1.0) == pytest.approx(0.8)
    assert backoff_delay(30, 0.2, 10.0, lambda: 1.0) == 10.0
    assert backoff_delay(5, 0.2, 10.0, lambda: 0.0) == 0.0


@given(st.integers(1, 200), st.floats(0, 1))
def test_backoff_never_exceeds_cap(attempt: int, r: float) -> None:
    d = backoff_delay(attempt, 0.2, 10.0, lambda: r)
    assert 0.0 <= d <= 10.0


def test_permanent_failure_is_not_retried() -> None:
    d = decide_retry(attempts=1, retryable=False, retry_after=None, age=0, budget=BUDGET, rand=lambda: 0.5)
    assert not d.retry and "permanent" in d.reason


def test_attempts_budget() -> None:
    d = decide_retry(attempts=4, retryable=True, retry_after=None, age=0, budget=BUDGET, rand=lambda: 0.5)
    assert d.retry
    d = decide_retry(attempts=5, retryable=True, retry_after=None, age=0, budget=BUDGET, rand=lambda: 0.5)
    assert not d.retry and "5 attempts" in d.reason


def test_retry_after_raises_delay_and_age_budget_stops() -> None:
    d = decide_retry(attempts=1, retryable=True, retry_after=7.0, age=0, budget=BUDGET, rand=lambda: 0.5)
    assert d.retry and d.delay == 7.0 and "retry-after" in d.reason
    d = decide_retry(attempts=1, retryable=True, retry_after=7.0, age=55.0, budget=BUDGET, rand=lambda: 0.5)
    assert not d.retry and "age" in d.reason


def test_token_bucket_paces_to_rate() -> None:
    b = TokenBucket(rate=10.0, now=0.0)  # burst 10
    waits = [b.reserve(0.0) for _ in range(20)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(0.1)
    assert waits[19] == pytest.approx(1.0)
    b2 = TokenBucket(rate=10.0, now=0.0)
    for _ in range(10):
        b2.reserve(0.0)
    assert b2.reserve(0.5) == 0.0  # refilled 5 tokens


@given(st.floats(0.5, 1000), st.integers(1, 300))
def test_token_bucket_long_run_rate(rate: float, n: int) -> None:
    b = TokenBucket(rate=rate, now=0.0)
    last = 0.0
    for _ in range(n):
        last = b.reserve(0.0)
    # n reservations at one instant: the last waits (n - burst) / rate
    assert last == pytest.approx(max(0.0, (n - b.burst) / rate), abs=1e-6)


def test_breaker_opens_probes_and_closes() -> None:
    br = CircuitBreaker(threshold=3, cooldown=5.0)
    for _ in range(2):
        assert br.allow(0.0) == 0.0
        br.record_failure(0.0)
    assert br.state.name == "CLOSED"
    br.record_failure(1.0)
    assert br.state.name == "OPEN"
    assert br.allow(2.0) == pytest.approx(4.0)
    assert br.allow(6.0) == 0.0  # the probe
    assert br.state.name == "HALF_OPEN"
    assert br.allow(6.0) > 0  # others wait while the probe is out
    br.record_failure(6.5)
    assert br.state.name == "OPEN" and br.allow(7.0) == pytest.approx(4.5)
    assert br.allow(11.5) == 0.0
    br.record_success()
    assert br.state.name == "CLOSED" and br.allow(11.6) == 0.0


def test_breaker_success_resets_consecutive_count() -> None:
    br = CircuitBreaker(threshold=3, cooldown=5.0)
    br.record_failure(0)
    br.record_failure(0)
    br.record_success()
    br.record_failure(0)
    br.record_failure(0)
    assert br.state.name == "CLOSED"


def test_breaker_neutral_result_frees_the_probe() -> None:
    br = CircuitBreaker(threshold=1, cooldown=1.0)
    br.record_failure(0.0)
    assert br.allow(1.0) == 0.0
    br.record_neutral()
    assert br.allow(1.0) == 0.0


def test_commit_frontier() -> None:
    assert commit_frontier([], 10) == 10
    assert commit_frontier([7, 3, 9], 10) == 3


def test_tracker_commits_only_below_the_lowest_pending() -> None:
    tr = PartitionTracker()
    assert tr.frontier() is None
    tr.add(0, 2)
    tr.add(1, 1)
    tr.add(2, 0)  # no channels: terminal at once
    assert tr.frontier() == 0
    tr.done(1)
    assert tr.frontier() == 0  # offset 0 still has two deliveries out
    tr.done(0)
    assert tr.frontier() == 0
    tr.done(0)
    assert tr.frontier() == 3
    tr.committed = 3
    assert tr.frontier() is None


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_tracker_frontier_never_passes_a_pending_offset(fanouts: list[int], rnd) -> None:
    tr = PartitionTracker()
    outstanding: list[int] = []
    for off, n in enumerate(fanouts):
        tr.add(off, n)
        outstanding += [off] * n
    rnd.shuffle(outstanding)
    prev = -1
    while True:
        f = tr.frontier()
        pending = set(outstanding)
        if f is not None:
            assert f >= prev
            assert all(p >= f for p in pending)
            assert f == (min(pending) if pending else len(fanouts))
            prev = f
        if not outstanding:
            break
        tr.done(outstanding.pop())
    assert tr.frontier() == len(fanouts)


def test_breaker_lost_probe_is_replaced_after_a_cooldown() -> None:
    br = CircuitBreaker(threshold=1, cooldown=2.0)
    br.record_failure(0.0)
    assert br.allow(2.0) == 0.0  # probe taken, never reported (its task died)
    assert br.allow(3.0) > 0
    assert br.allow(4.0) == 0.0  # a new probe after another cooldown
