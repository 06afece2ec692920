"""The canary bucket function (stable, uniform) and the track filters of the contract."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.config import (
    BUCKETS,
    BucketRange,
    PipelineConfig,
    Track,
    alert_filter,
    bucket_of,
    key_filter,
)

pytestmark = pytest.mark.unit



def test_known_buckets_are_pinned() -> None:
    assert bucket_of("d1") == 2919
    assert bucket_of("device-42") == 1949
    # an independent computation of the documented definition
    import hashlib

    for key in ("d1", "device-42", "", "sensor/7"):
        want = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 10_000
        assert bucket_of(key) == want


@given(st.text(max_size=64))
def test_bucket_is_in_range_and_the_same_for_str_and_utf8_bytes(key: str) -> None:
    b = bucket_of(key)
    assert 0 <= b < BUCKETS
    assert b == bucket_of(key.encode("utf-8")) == bucket_of(key)


@given(st.sampled_from(["dev-", "sensor-", "site/a/", ""]), st.integers(0, 10**9))
def test_sequential_keys_spread(prefix: str, start: int) -> None:
    # 2,000 consecutive ids over 10 deciles: chi-square far below the 99.99 % quantile (~33.7, 9 dof)
    counts = Counter(bucket_of(f"{prefix}{start + i}") * 10 // BUCKETS for i in range(2000))
    chi2 = sum((counts.get(d, 0) - 200) ** 2 / 200 for d in range(10))
    assert chi2 < 33.7, counts


def test_uniform_over_many_keys() -> None:
    n = 200_000
    counts = Counter(bucket_of(f"device-{i}") for i in range(n))
    # a 10 % canary gets 10 % of the devices, within 3 standard deviations
    share = sum(c for b, c in counts.items() if b < 1000) / n
    assert abs(share - 0.1) < 3 * math.sqrt(0.1 * 0.9 / n)
    # and every bucket is used
    assert len(counts) == BUCKETS


@given(st.integers(0, BUCKETS), st.lists(st.text(max_size=12), max_size=50))
def test_weight_split_puts_every_key_in_exactly_one_track(weight: int, keys: list[str]) -> None:
    cand = key_filter(Track(name="candidate", ranges=[BucketRange(start=0, end=weight)]))
    stab = key_filter(Track(name="stable", ranges=[BucketRange(start=weight, end=BUCKETS)]))
    for k in keys:
        owners = [f is None or f(k) for f in (cand, stab)]
        assert owners.count(True) == 1, (k, weight)


def test_full_range_needs_no_filter_and_gaps_do() -> None:
    assert key_filter(None) is None
    halves = [BucketRange(start=0, end=4000), BucketRange(start=4000, end=BUCKETS)]
    assert key_filter(Track(name="stable", ranges=halves)) is None
    assert key_filter(Track(name="stable", ranges=[BucketRange(start=0, end=9999)])) is not None
    bounded = Track(name="stable", ranges=[BucketRange(start=0, end=BUCKETS, emit_until_ms=5)])
    assert key_filter(bounded) is not None  # bounded ranges are checked (emit side), keys too


def test_alert_filter_splits_a_handover_by_event_time() -> None:
    key = "d1"
    b = bucket_of(key)
    cut = 1_000
    old = Track(name="stable", ranges=[BucketRange(start=b, end=b + 1, emit_until_ms=cut)])
    new = Track(name="candidate", ranges=[BucketRange(start=b, end=b + 1, emit_from_ms=cut)])
    fo, fn = alert_filter(old), alert_filter(new)
    assert fo is not None and fn is not None
    for at in (0, cut - 1, cut, cut + 10**6):
        alert = {"labels": {"deviceId": key}, "eventTimeMs": at}
        assert [fo(alert), fn(alert)].count(True) == 1
        assert fn(alert) == (at >= cut)
    # a rule whose groups span devices has no deviceId label: the stable track publishes it
    group_alert = {"labels": {"site": "a"}, "eventTimeMs": 5}
    assert fo(group_alert) and not fn(group_alert)


def test_bucket_range_rejects_reversed_bounds_and_travels_in_the_config() -> None:
    with pytest.raises(ValueError, match="after its end"):
        BucketRange(start=10, end=5)
    with pytest.raises(ValueError):
        BucketRange(start=0, end=BUCKETS + 1)
    raw = {
        "tenant": "t", "pipeline": "p",
        "kafka": {"bootstrapServers": "x:1", "topics": {"events": "e", "alerts": "a", "late": "l",
                                                         "deadLetter": "d", "audit": "u"}},
        "redis": {"url": "redis://x", "keyPrefix": "p:"},
        "track": {"name": "candidate", "ranges": [{"start": 0, "end": 1000, "emitFromMs": 7}],
                  "consumerGroup": "g-canary", "startAt": "latest"},
    }
    cfg = PipelineConfig.model_validate(raw)
    assert cfg.track is not None and cfg.track.ranges[0].emit_from_ms == 7
    assert PipelineConfig.from_json(cfg.to_json()) == cfg
    # the track is part of the revision; the rules revision ignores it
    assert cfg.content_revision() != cfg.model_copy(update={"track": None}).content_revision()
    assert cfg.rules_revision() == cfg.model_copy(update={"track": None}).rules_revision()
