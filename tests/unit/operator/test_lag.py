"""Lag rules per partition: one vector for each case the issue lists, and the summary's sums."""

from __future__ import annotations

import pytest

from alertpipe.operator.decisions.lag import (
    GroupOffsets,
    PartitionOffsets,
    ResetPolicy,
    partition_lag,
    summarize,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("low", "high", "committed", "reset", "lag"),
    [
        pytest.param(0, 100, 40, "earliest", 60, id="committed-offset"),
        pytest.param(0, 100, None, "earliest", 100, id="no-offset-earliest-from-low"),
        pytest.param(30, 100, None, "earliest", 70, id="no-offset-earliest-low-moved"),
        pytest.param(0, 100, None, "latest", 0, id="no-offset-latest-nothing"),
        pytest.param(500, 900, 120, "earliest", 400, id="retention-deleted-committed"),
        pytest.param(0, 100, 101, "earliest", 0, id="past-high-transaction-marker"),
        pytest.param(0, 100, 100, "earliest", 0, id="caught-up"),
        pytest.param(0, 0, None, "earliest", 0, id="empty-topic"),
        pytest.param(50, 50, 10, "earliest", 0, id="everything-deleted"),
        pytest.param(0, 100, -1001, "earliest", 100, id="invalid-offset-sentinel"),
    ],
)
def test_partition_lag(low: int, high: int, committed: int | None, reset: ResetPolicy, lag: int) -> None:
    assert partition_lag(PartitionOffsets(0, low, high, committed), reset) == lag


def test_partition_added_while_running_counts_from_its_low_watermark() -> None:
    old = [PartitionOffsets(0, 0, 100, 90), PartitionOffsets(1, 0, 100, 100)]
    new = PartitionOffsets(2, 0, 25, None)  # grown: the group has no offset there yet
    s = summarize(GroupOffsets("g", "t", (*old, new), True, 10.0), "earliest")
    assert s.partitions == 3 and s.total == 10 + 0 + 25
    assert s.by_partition == ((0, 10), (1, 0), (2, 25))


def test_group_missing_entirely_uses_the_reset_policy() -> None:
    parts = (PartitionOffsets(0, 0, 40, None), PartitionOffsets(1, 10, 30, None))
    assert summarize(GroupOffsets("g", "t", parts, False, 1.0), "earliest").total == 60
    assert summarize(GroupOffsets("g", "t", parts, False, 1.0), "latest").total == 0


def test_summary_names_the_partition_with_most_lag_and_sums_for_rates() -> None:
    parts = (PartitionOffsets(1, 0, 100, 90), PartitionOffsets(0, 0, 300, 0), PartitionOffsets(2, 0, 50, 50))
    s = summarize(GroupOffsets("g", "t", parts, True, 5.0), "earliest")
    assert (s.max_partition, s.max_lag, s.total) == (0, 300, 310)
    assert s.high_total == 450 and s.consumed_total == 450 - 310


def test_empty_topic_is_zero_lag_not_unknown() -> None:
    s = summarize(GroupOffsets("g", "t", (PartitionOffsets(0, 0, 0, None),), False, 0.0), "earliest")
    assert s.total == 0 and s.max_partition is None and s.partitions == 1
