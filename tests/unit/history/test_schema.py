"""The history's day partitions: names, which expire, and the UTC day of a decision."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.history.schema import TABLE, day_of_ms, expired, partition_day, partition_name

pytestmark = pytest.mark.unit


def test_a_partition_is_named_after_its_utc_day_and_read_back() -> None:
    assert partition_name(date(2026, 12, 3)) == f"{TABLE}_20261203"
    assert partition_day(f"{TABLE}_20261203") == date(2026, 12, 3)
    assert partition_day("alertpipe_decisions") is None
    assert partition_day(f"{TABLE}_2026120") is None
    assert partition_day(f"other_{TABLE}_20261203") is None


def test_the_day_is_utc_not_local() -> None:
    assert day_of_ms(1_764_719_999_999) == date(2025, 12, 2)  # 23:59:59.999 UTC
    assert day_of_ms(1_764_720_000_000) == date(2025, 12, 3)


def test_retention_keeps_today_and_the_days_before_it() -> None:
    today = date(2026, 12, 3)
    names = [partition_name(today - timedelta(days=n)) for n in range(6)] + ["not_ours_20200101"]
    assert expired(names, today, 3) == sorted(partition_name(today - timedelta(days=n)) for n in (4, 5))
    assert expired(names, today, 30) == []
    with pytest.raises(ValueError, match="at least 1 day"):
        expired(names, today, 0)


@given(
    ages=st.lists(st.integers(min_value=-3, max_value=400), unique=True, max_size=40),
    retention=st.integers(min_value=1, max_value=366),
)
def test_a_partition_expires_exactly_when_it_is_older_than_the_retention(
    ages: list[int], retention: int
) -> None:
    today = date(2026, 12, 3)
    names = {partition_name(today - timedelta(days=a)): a for a in ages}
    gone = set(expired(names, today, retention))
    assert gone == {n for n, a in names.items() if a > retention}
