"""The deliverer's decisions as pure functions and small state machines, free of I/O and clocks.

Backoff with full jitter, Retry-After parsing, the retry budget, response classification, the
token bucket, the circuit breaker and the commit frontier. Callers pass ``now`` and a random source,
so every decision is unit-tested without sleeping.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "RetryBudget",
    "RetryDecision",
    "TokenBucket",
    "backoff_delay",
    "classify_http_status",
    "commit_frontier",
    "decide_retry",
    "parse_retry_after",
]

StatusClass = Literal["delivered", "retry", "permanent"]


def classify_http_status(status: int) -> StatusClass:
    """2xx delivered; 408, 429 and 5xx worth a retry; every other status (3xx, 4xx) is permanent.

    Redirects are permanent on purpose: following one could lead a signed body to a target the
    SSRF guard never saw.
    """
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    return "permanent"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - now)
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def backoff_delay(attempt: int, initial: float, maximum: float, rand: Callable[[], float]) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(maximum, initial * 2^(attempt-1))].

    ``attempt`` is the number of attempts made so far (1 after the first failure).
    """
    exp = min(attempt - 1, 62)
    cap = min(maximum, initial * (2.0**exp))
    return cap * rand()


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Attempts and age after which a delivery gives up (from the channel's RetryPolicy)."""

    max_attempts: int
    max_age: float
    initial_backoff: float
    max_backoff: float


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float
    reason: str


def decide_retry(
    *,
    attempts: int,
    retryable: bool,
    retry_after: float | None,
    age: float,
    budget: RetryBudget,
    rand: Callable[[], float],
) -> RetryDecision:
    """After a failed attempt: retry after ``delay`` seconds, or give up with a reason.

    ``age`` is how old the alert is now (seconds since it was produced or replayed). Retry-After
    raises the delay (never lowers it); a wait that would end past the budget's age gives up now
    rather than sleep for nothing.
    """
    if not retryable:
        return RetryDecision(False, 0.0, "permanent failure (not retried)")
    if attempts >= budget.max_attempts:
        return RetryDecision(False, 0.0, f"retry budget exhausted: {attempts} attempts")
    delay = backoff_delay(attempts, budget.initial_backoff, budget.max_backoff, rand)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if age + delay > budget.max_age:
        return RetryDecision(
            False,
            0.0,
            f"retry budget exhausted: alert age {age:.1f}s + wait {delay:.1f}s > {budget.max_age:g}s",
        )
    why = f"retry-after {retry_after:g}s" if retry_after is not None and delay == retry_after else "backoff"
    return RetryDecision(True, delay, why)


class TokenBucket:
    """A token bucket that hands out reservations: ``reserve(now)`` says how long to wait first.

    Reserving (letting tokens go negative) instead of polling keeps waiting senders in FIFO order
    and needs no timer of its own.
    """

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, now: float) -> float:
        """Take one token; returns the seconds to wait before using it (0 when available now)."""
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = min(self.tokens, self.burst)


class BreakerState(Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; after ``cooldown`` one probe is let through.

    A successful probe closes the circuit; a failed one opens it again for another cooldown. While
    the probe is in flight every other caller waits (``allow`` returns the wait).
    """

    threshold: int = 5
    cooldown: float = 5.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = field(default=False)
    probe_started: float = 0.0

    def allow(self, now: float) -> float:
        """0 when a call may go now (and, half-open, takes the probe slot); else seconds to wait."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            ready = self.opened_at + self.cooldown
            if now < ready:
                return ready - now
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.probing and now < self.probe_started + self.cooldown:
            return min(self.cooldown, 0.5)
        # no probe out, or the last one never reported back (its caller died): send one
        self.probing = True
        self.probe_started = now
        return 0.0

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probing = False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at = now
            self.probing = False

    def record_neutral(self) -> None:
        """A call that says nothing about the receiver's health (e.g. a 400): frees the probe slot."""
        if self.state is BreakerState.HALF_OPEN:
            self.probing = False


def commit_frontier(pending: Iterable[int], next_offset: int) -> int:
    """The offset to commit for one partition: the lowest offset whose alert is not terminal yet.

    ``pending`` holds the offsets still in flight (any order); ``next_offset`` is one past the
    highest offset handed out so far. With nothing pending everything read is done, so the
    frontier is ``next_offset``. Kafka's committed offset is the next one to read, so a crash
    redelivers exactly the alerts that were not terminal (and later ones, which the delivered
    marks in Redis skip).
    """
    return min(pending, default=next_offset)
