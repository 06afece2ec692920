"""Runtime state of the pipeline's channels (concurrency limit, token bucket, circuit breaker, retry
budget), kept across config revisions while a channel's spec is unchanged, and the two delivery kill
switches read from the config: stop delivery (``is_paused``) and mute a channel (``is_muted``)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from alertpipe.workers.config import ChannelSpec, PipelineConfig, parse_duration
from alertpipe.workers.deliverer.policy import CircuitBreaker, RetryBudget, TokenBucket

__all__ = ["ChannelState", "ChannelTable", "is_muted", "is_paused"]


def is_paused(config: PipelineConfig, now: datetime) -> bool:
    ks = config.kill_switches.stop_delivery
    return ks is not None and ks.active(now)


def is_muted(config: PipelineConfig, channel: str, now: datetime) -> str | None:
    """The mute reason when ``channel`` is muted now, else None."""
    for sw in config.kill_switches.muted_channels:
        if sw.name == channel and sw.active(now):
            return sw.reason
    return None


class ChannelState:
    """Runtime state of one channel: its spec, limiter, bucket, breaker and retry budget."""

    def __init__(self, spec: ChannelSpec, threshold: int, cooldown: float) -> None:
        self.spec = spec
        self.sem = asyncio.Semaphore(spec.max_concurrency)
        self.bucket = TokenBucket(spec.rate_limit_per_second, now=time.monotonic())
        self.breaker = CircuitBreaker(threshold=threshold, cooldown=cooldown)
        r = spec.retry
        self.budget = RetryBudget(
            r.max_attempts,
            parse_duration(r.max_age),
            parse_duration(r.initial_backoff),
            parse_duration(r.max_backoff),
        )


class ChannelTable:
    """The state of each channel in use, made on first use from the config's spec."""

    def __init__(self, breaker_threshold: int, breaker_cooldown: float) -> None:
        self._threshold = breaker_threshold
        self._cooldown = breaker_cooldown
        self._states: dict[str, ChannelState] = {}

    def get(self, name: str, config: PipelineConfig) -> ChannelState | None:
        """The channel's state (made now if new), or None when the config does not define it."""
        ch = self._states.get(name)
        if ch is None:
            spec = config.channel(name)
            if spec is None:
                return None
            ch = self._states[name] = ChannelState(spec, self._threshold, self._cooldown)
        return ch

    def __getitem__(self, name: str) -> ChannelState:
        """The state of a channel in use (KeyError if it is not)."""
        return self._states[name]

    def peek(self, name: str) -> ChannelState | None:
        """The channel's state if it is in use, without making it."""
        return self._states.get(name)

    def forget_changed(self, config: PipelineConfig) -> None:
        """A new revision: drop the state of channels it removes or changes (they start afresh)."""
        for name in list(self._states):
            spec = config.channel(name)
            if spec is None or spec != self._states[name].spec:
                del self._states[name]
