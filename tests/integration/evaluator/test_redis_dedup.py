"""The dedup script against a real Redis: one flag byte per key — new, the same record again (a
replay after a crash: evaluate), or a copy first seen at another offset (skip) — and the stored
owner is exactly ``owner(partition, offset)`` (the value earlier versions wrote and read)."""

from __future__ import annotations

import pytest
import redis

from alertpipe.workers.evaluator import redis_state
from alertpipe.workers.evaluator.redis_state import (
    DUPLICATE,
    NEW,
    SAME_RECORD,
    RedisState,
    dedup_key,
    owner,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("script", ["set-nx-get", "get-then-set"])
def test_flags_and_owners(redis_url: str, unique: str, script: str) -> None:
    """Both scripts (SET NX GET for Redis >= 7.0, GET then SET for older ones) alike."""
    r = redis.Redis.from_url(redis_url)
    state = RedisState(r, f"t{unique}{script}", "events")
    if script == "get-then-set":
        state._dedup = r.register_script(redis_state._DEDUP)  # noqa: SLF001 - the older Redis's script

    def key(dev: str, seq: int) -> bytes:
        return dedup_key(state.prefix, "acme", dev, seq)

    big = 2**40 + 5  # offsets beyond 32 bits keep every digit
    first = state.check([key("d1", 1), key("d1", 2), key("d1", 1), key("d2", 7)], [3, 3, 4, 5],
                        [10, 11, 99, big], 60)
    assert list(first) == [NEW, NEW, DUPLICATE, NEW]  # the third is a copy of the first
    again = state.check([key("d1", 1), key("d2", 7), key("d1", 2)], [3, 5, 9], [10, big, 11], 60)
    assert list(again) == [SAME_RECORD, SAME_RECORD, DUPLICATE]
    assert r.get(key("d2", 7)) == owner(5, big)
    assert r.get(key("d1", 1)) == owner(3, 10)
    assert 0 < r.ttl(key("d1", 1)) <= 60
    assert state.check([], [], [], 60) == b""
