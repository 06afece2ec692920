"""What a kill -9 may repeat: deliveries the receiver took that Redis did not yet hold as delivered.

``unmarked`` is taken right after each kill; ``check_repeats`` then holds the final counts to it: a
key may be repeated once per kill that found it unmarked, and each kill may add at most the sends
that can be in flight at once (maxConcurrency per channel, the mark is written inside the slot).
"""

from __future__ import annotations

from collections import Counter

import redis

from tests.integration.deliverer.conftest import Pipeline


def unmarked(pipeline: Pipeline, taken: Counter[str]) -> set[str]:
    """Keys the receiver took that Redis does not hold as delivered: what a restart sends again."""
    keys = sorted(taken)
    if not keys:
        return set()
    prefix = pipeline.config.redis.key_prefix
    with redis.Redis.from_url(pipeline.redis_url) as r:
        values = r.mget([f"{prefix}:dlv:{k}" for k in keys])
    return {k for k, v in zip(keys, values, strict=True) if v != b"d"}


def check_repeats(counts: Counter[str], at_kill: list[set[str]], in_flight: int) -> int:
    """Assert the repeats in ``counts`` are what the kills allowed; return how many there were."""
    repeats = {k: c - 1 for k, c in counts.items() if c > 1}
    for key, extra in repeats.items():
        allowed = sum(1 for u in at_kill if key in u)
        assert extra <= allowed, f"{key} repeated {extra}x, but unmarked at only {allowed} kill(s)"
    seen: set[str] = set()
    for i, u in enumerate(at_kill):
        assert len(u - seen) <= in_flight, (
            f"kill {i + 1}: {len(u - seen)} new unmarked deliveries > {in_flight}"
        )
        seen |= u
    return sum(repeats.values())
