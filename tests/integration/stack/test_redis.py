"""The devstack's Redis is a real redis-server: NX with TTL, pipelines, and an AOF that survives restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from devstack.processes import wait_until as _wait_until
from devstack.redis import RedisServer

pytestmark = pytest.mark.integration


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    _wait_until(check, "condition", timeout)


def test_set_nx_with_ttl(redis_url: str, unique: str) -> None:
    r = redis.Redis.from_url(redis_url)
    key = f"{unique}:claim"
    assert r.set(key, "owner-a", nx=True, ex=30) is True
    assert r.set(key, "owner-b", nx=True, ex=30) is None
    assert r.get(key) == b"owner-a"
    assert 0 < r.pttl(key) <= 30_000
    # the server enforces the TTL: a 50 ms claim disappears by itself and can be taken again
    assert r.set(f"{unique}:short", "owner-a", nx=True, px=50) is True
    wait_until(lambda: r.exists(f"{unique}:short") == 0, timeout=10)
    assert r.set(f"{unique}:short", "owner-b", nx=True, px=50) is True


def test_pipeline_of_a_thousand_commands(redis_url: str, unique: str) -> None:
    r = redis.Redis.from_url(redis_url)
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"{unique}:k{i}", i)
        pipe.incrby(f"{unique}:sum", i)
    results = pipe.execute()
    assert len(results) == 1000
    assert int(r.get(f"{unique}:sum") or 0) == sum(range(500))
    assert r.mget([f"{unique}:k{i}" for i in (0, 250, 499)]) == [b"0", b"250", b"499"]


def test_data_survives_a_restart_with_aof(redis_server: RedisServer, unique: str) -> None:
    r = redis.Redis.from_url(redis_server.url)
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    r.hset(f"{unique}:state", mapping={"offset": "42", "window": "w1"})
    r.set(f"{unique}:ttl", "v", ex=600)
    run_id = r.info("server")["run_id"]
    pid = redis_server.process.pid if redis_server.process else None

    redis_server.restart()

    r = redis.Redis.from_url(redis_server.url)
    assert r.info("server")["run_id"] != run_id  # a new server process ...
    assert redis_server.process is not None and redis_server.process.pid != pid
    assert r.hgetall(f"{unique}:state") == {b"offset": b"42", b"window": b"w1"}  # ... with the data
    assert 0 < r.ttl(f"{unique}:ttl") <= 600
