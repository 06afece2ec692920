"""Canary tracks in the contract: the bucket function, bucket ranges and a track's share of the keys.

Every event key (the deviceId, which is also the Kafka message key) hashes to one of ``BUCKETS``
(10,000) buckets with a documented, stable function: the first 8 bytes of BLAKE2b (digest_size=8,
no key, no salt, no person) of the key's UTF-8 bytes, read big-endian, modulo 10,000. It depends on
nothing but the key, so the same key lands in the same bucket in every process, platform and release
(a test pins known values). A pipeline's evaluator tracks (stable, candidate) each own ranges of
buckets; a range may carry event-time bounds on what the track *emits*, which is how a step hands
keys from one track to the other without losing or doubling an alert (docs/operator.md, Rollouts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from alertpipe.workers.config.base import Model

__all__ = ["BUCKETS", "BucketRange", "Track", "alert_filter", "bucket_of", "key_filter"]

BUCKETS = 10_000
_CACHE_MAX = 1 << 20  # keys remembered per filter (a device fleet fits; beyond it the cache restarts)


def bucket_of(key: str | bytes) -> int:
    """The bucket (0..9,999) of an event key: BLAKE2b-64 of its UTF-8 bytes, big-endian, mod 10,000."""
    raw = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % BUCKETS


class BucketRange(Model):
    """Buckets ``start`` (inclusive) to ``end`` (exclusive) that a track evaluates.

    ``emitFromMs`` / ``emitUntilMs`` bound, in event time, the alert transitions the track publishes
    for these keys: a key being handed over is evaluated by both tracks for a warm-up, the old owner
    publishing transitions before the cut and the new owner those at or after it.
    """

    start: int = Field(ge=0, le=BUCKETS, description="First bucket (inclusive).")
    end: int = Field(ge=0, le=BUCKETS, description="Last bucket (exclusive).")
    emit_from_ms: int | None = Field(None, description="Publish transitions at or after this event time.")
    emit_until_ms: int | None = Field(None, description="Publish transitions before this event time.")

    @model_validator(mode="after")
    def _ordered(self) -> BucketRange:
        if self.start > self.end:
            raise ValueError(f"bucket range start {self.start} is after its end {self.end}")
        return self

    def holds(self, bucket: int) -> bool:
        return self.start <= bucket < self.end

    def emits(self, event_time_ms: int) -> bool:
        if self.emit_from_ms is not None and event_time_ms < self.emit_from_ms:
            return False
        return self.emit_until_ms is None or event_time_ms < self.emit_until_ms


class Track(Model):
    """Which keys one evaluator track owns; absent from a config means: every key, no bounds."""

    name: Literal["stable", "candidate"] = Field(description="stable or candidate.")
    ranges: list[BucketRange] = Field(default_factory=list, description="Bucket ranges it evaluates.")
    consumer_group: str | None = Field(
        None, description="Kafka consumer group of this track (default: the evaluator's own)."
    )
    start_at: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts (a new candidate: latest)."
    )
    shadow: bool = Field(False, description="Shadow mode: outputs go to a shadow topic nobody delivers.")

    def covers_all(self) -> bool:
        """Every bucket, with no emit bounds: the track behaves as if it were alone."""
        spans = sorted(
            (r.start, r.end) for r in self.ranges if r.emit_from_ms is None and r.emit_until_ms is None
        )
        at = 0
        for s, e in spans:
            if s > at:
                return False
            at = max(at, e)
        return at >= BUCKETS


def _in(ranges: Sequence[BucketRange], bucket: int) -> bool:
    return any(r.start <= bucket < r.end for r in ranges)


def key_filter(track: Track | None) -> Callable[[bytes | str], bool] | None:
    """A predicate "this track evaluates key k", or None when it evaluates every key (no check).

    Cached per key: the hash costs ~0.4 µs, a dict hit a tenth of that, and fleets repeat keys.
    """
    if track is None or track.covers_all():
        return None
    ranges = list(track.ranges)
    cache: dict[bytes | str, bool] = {}

    def evaluates(key: bytes | str) -> bool:
        hit = cache.get(key)
        if hit is None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            hit = cache[key] = _in(ranges, bucket_of(key))
        return hit

    return evaluates


def alert_filter(track: Track | None) -> Callable[[dict[str, Any]], bool] | None:
    """A predicate "this track publishes alert a" (by its deviceId label's bucket and its event
    time), or None when it publishes everything. An alert without a deviceId label (a rule whose
    groups span devices) is published by the stable track only."""
    if track is None or track.covers_all():
        return None
    ranges = list(track.ranges)
    stable = track.name == "stable"

    def publishes(alert: dict[str, Any]) -> bool:
        device = (alert.get("labels") or {}).get("deviceId")
        if device is None:
            return stable
        b = bucket_of(str(device))
        at = int(alert.get("eventTimeMs") or 0)
        return any(r.holds(b) and r.emits(at) for r in ranges)

    return publishes
