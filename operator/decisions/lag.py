"""Consumer lag from offsets: per-partition rules and the summary the scaling decision reads.

Lag of one partition is how many records the group has still to consume, judged like KEDA's Kafka
scaler judges it: no committed offset falls back to the group's reset policy; a committed offset
retention has deleted counts from the low watermark; transaction markers and compacted gaps never
make lag negative; an empty partition has no lag (0, not unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["GroupOffsets", "LagSummary", "PartitionOffsets", "ResetPolicy", "partition_lag", "summarize"]

ResetPolicy = Literal["earliest", "latest"]


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition as observed: low and high watermark, the group's committed offset (None: none)."""

    partition: int
    low: int
    high: int
    committed: int | None


@dataclass(frozen=True)
class GroupOffsets:
    """One group on one topic at one time. ``group_exists`` False: the group committed nothing at all."""

    group: str
    topic: str
    partitions: tuple[PartitionOffsets, ...]
    group_exists: bool
    at: float


@dataclass(frozen=True)
class LagSummary:
    total: int
    by_partition: tuple[tuple[int, int], ...]  # (partition, lag), by partition number
    max_partition: int | None  # the partition holding the most lag (None: no lag anywhere)
    max_lag: int
    high_total: int  # sum of high watermarks: its change over time is the arrival rate
    consumed_total: int  # sum of (high - lag): its change over time is the service rate
    partitions: int
    at: float


def partition_lag(p: PartitionOffsets, reset: ResetPolicy) -> int:
    """Records left to consume on one partition (never negative)."""
    high, low = p.high, max(0, min(p.low, p.high))
    if high <= low:
        return 0  # empty (or everything deleted): nothing to consume
    if p.committed is None or p.committed < 0:
        # no offset: the consumer starts where its reset policy says
        return high - low if reset == "earliest" else 0
    if p.committed < low:
        return high - low  # retention deleted the committed offset: the consumer restarts at low
    return max(0, high - p.committed)  # a committed offset past a marker can exceed high


def summarize(offsets: GroupOffsets, reset: ResetPolicy) -> LagSummary:
    """Lag per partition and in total, and the sums the rates are taken from."""
    lags: list[tuple[int, int]] = []
    high_total = consumed_total = 0
    for p in sorted(offsets.partitions, key=lambda x: x.partition):
        lag = partition_lag(p, reset)
        lags.append((p.partition, lag))
        high_total += max(0, p.high)
        consumed_total += max(0, p.high) - lag
    return _summary(lags, high_total, consumed_total, offsets.at)


def _summary(lags: Sequence[tuple[int, int]], high_total: int, consumed_total: int, at: float) -> LagSummary:
    total = sum(lag for _, lag in lags)
    top = max(lags, key=lambda x: (x[1], -x[0]), default=None)
    return LagSummary(
        total=total,
        by_partition=tuple(lags),
        max_partition=top[0] if top is not None and top[1] > 0 else None,
        max_lag=top[1] if top is not None else 0,
        high_total=high_total,
        consumed_total=consumed_total,
        partitions=len(lags),
        at=at,
    )
