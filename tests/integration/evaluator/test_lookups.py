"""Lookup tables on real Redis and Kafka: ``alertpipe lookup load`` writes per-device thresholds from
a CSV and maintenance windows from a JSON file into the pipeline's Redis; an evaluator process
alerts only for devices over their own threshold and not for a device in maintenance; a threshold
changed with ``lookup load`` takes effect once the cache's TTL has passed; the rows live under the
pipeline's key prefix (another pipeline's store does not see them); Redis down holds the evaluator
and drops nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from alertpipe.workers.evaluator.lookup_store import RedisLookupStore

from .conftest import ROOT, EvaluatorProcess, Pipeline, wait_for

pytestmark = pytest.mark.integration

RULES: list[dict[str, Any]] = [
    {"name": "over-own-threshold", "spec": {
        "select": {"types": ["cpu"]},
        "threshold": {"condition": "value > lookup('thresholds', deviceId).max"},
        "annotations": {"summary": "{{ value }} on {{ deviceId }}"}}},
    {"name": "hot-unless-maintenance", "spec": {
        "select": {"types": ["temp"]},
        "threshold": {"condition": "value > 80 && !(lookup('maintenance', deviceId).until > ts)"}}},
]  # fmt: skip


def lookup_cli(pipe: Pipeline, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "alertpipe", "lookup", *args[:1], "--config", f"file:{pipe.path}", *args[1:]],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def events(devices: dict[str, tuple[str, float]], seqs: range, t0: int) -> list[tuple[str, bytes]]:
    """One event a second per device (type, value), in time order: a device's later events release
    its first (the lateness bound), and no device's events are late for another's."""
    return [(dev, orjson.dumps({"tenant": "acme", "deviceId": dev, "seq": s, "ts": t0 + s * 1000,
                                "type": typ, "value": value}))
            for s in seqs for dev, (typ, value) in devices.items()]


def firing(pipe: Pipeline, min_count: int) -> set[tuple[str, str]]:
    alerts = pipe.read("alerts", min_count=min_count, timeout=60, quiet=2.0)
    return {(a["rule"], a["groupKey"]) for a in alerts if a["status"] == "firing"}


def test_per_device_thresholds_and_maintenance_windows_from_redis(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path, redis_url: str
) -> None:
    pipeline.rules = RULES
    pipeline.extra = {"lookups": {"ttl": "1s", "tables": ["thresholds", "maintenance"]}}
    pipeline.write()
    csv = tmp_path / "thresholds.csv"
    csv.write_text("deviceId,max,owner\nlk-1,50,ops\nlk-2,80,ops\n")  # lk-3 has no row
    assert "2 row(s) written" in lookup_cli(pipeline, "load", "--table", "thresholds", str(csv))
    t0 = int(time.time() * 1000) - 60_000
    windows = tmp_path / "maintenance.json"
    windows.write_text(orjson.dumps({"lk-4": {"until": t0 + 3_600_000, "reason": "firmware"}}).decode())
    lookup_cli(pipeline, "load", "--table", "maintenance", str(windows))
    row = orjson.loads(lookup_cli(pipeline, "get", "--table", "thresholds", "lk-1"))
    assert row == {"key": "lk-1", "row": {"max": 50, "owner": "ops"}}  # typed: 50 is a number

    prefix = pipeline.config().redis.lookups_prefix
    r = redis.Redis.from_url(redis_url)
    assert r.hgetall(f"{prefix}:lookup:thresholds:lk-1") == {b"max": b"50", b"owner": b'"ops"'}
    assert RedisLookupStore(r, prefix + "other").get("thresholds", "lk-1") is None  # another pipeline's

    ev = EvaluatorProcess(pipeline, tmp_path, checkpoint_interval=0.5).start()
    evaluators.append(ev)
    first = range(10)
    pipeline.produce(events({"lk-1": ("cpu", 60), "lk-2": ("cpu", 60), "lk-3": ("cpu", 60),
                             "lk-4": ("temp", 95), "lk-5": ("temp", 95)}, first, t0))
    assert firing(pipeline, 2) == {("over-own-threshold", "deviceId=lk-1"),
                                   ("hot-unless-maintenance", "deviceId=lk-5")}
    assert ev.metric("alertpipe_evaluator_lookup_rows_total") > 0
    misses = ev.metric('alertpipe_evaluator_lookup_rows_total{result="miss",tenant="acme"}')
    assert misses >= 5  # every device's row (or its absence) was read from Redis at least once

    # lk-2's threshold drops under its values: the next batch after the TTL reads the new row
    csv.write_text("deviceId,max\nlk-2,40\n")
    lookup_cli(pipeline, "load", "--table", "thresholds", str(csv))
    time.sleep(1.5)  # > spec.lookups.ttl
    pipeline.produce(events({"lk-2": ("cpu", 60)}, range(10, 13), t0))
    wait_for(lambda: ("over-own-threshold", "deviceId=lk-2") in firing(pipeline, 3), "lk-2 to fire", 60)
    assert ev.metric('alertpipe_evaluator_lookup_rows_total{result="miss",tenant="acme"}') > misses
    assert ev.metric('alertpipe_evaluator_lookup_rows_total{result="unfetched",tenant="acme"}') == 0

    # deleting rows: lk-1 has none any more, so it resolves at its next event
    assert "1 row(s) deleted" in lookup_cli(pipeline, "delete", "--table", "thresholds", "lk-1")
    time.sleep(1.5)
    pipeline.produce(events({"lk-1": ("cpu", 60)}, range(10, 18), t0))  # the later ones release the first
    wait_for(lambda: any(a["status"] == "resolved" and a["groupKey"] == "deviceId=lk-1"
                         for a in pipeline.read("alerts", min_count=4, timeout=30, quiet=1.0)),
             "lk-1 to resolve", 60)
    assert ev.stop() == 0


def test_redis_down_holds_lookup_rules_and_nothing_is_dropped(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path, redis_server: Any
) -> None:
    """Redis stops after the rows' TTL ran out: the evaluator holds (alive, nothing evaluated with
    stale or absent rows, no alert); once Redis is back (AOF kept the rows) the held events are
    evaluated and each device fires once."""
    pipe = dataclasses.replace(pipeline, redis_url=redis_server.url)
    pipe.rules = RULES[:1]
    pipe.extra = {"lookups": {"ttl": "1s"}}
    cfg = pipe.write()
    store = RedisLookupStore(redis.Redis.from_url(redis_server.url), cfg.redis.lookups_prefix)
    store.put("thresholds", [("rd-1", {"max": 50}), ("rd-2", {"max": 50})])
    ev = EvaluatorProcess(pipe, tmp_path, checkpoint_interval=0.5).start()
    evaluators.append(ev)
    t0 = int(time.time() * 1000) - 60_000
    pipe.produce(events({"rd-1": ("cpu", 60), "rd-2": ("cpu", 10)}, range(10), t0))
    assert firing(pipe, 1) == {("over-own-threshold", "deviceId=rd-1")}
    redis_server.stop(kill=True)
    try:
        time.sleep(1.5)  # the cached rows are older than the TTL now: the next batch must read Redis
        pipe.produce(events({"rd-2": ("cpu", 60)}, range(10, 20), t0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert ev.running(), ev.log_text()[-3000:]  # holds, never exits
            time.sleep(0.2)
        assert firing(pipe, 1) == {("over-own-threshold", "deviceId=rd-1")}  # rd-2 not evaluated yet
    finally:
        redis_server.start()
    wait_for(lambda: ("over-own-threshold", "deviceId=rd-2") in firing(pipe, 2), "rd-2 to fire", 90)
    alerts = pipe.read("alerts", min_count=2, timeout=30, quiet=2.0)
    fired = sorted(a["groupKey"] for a in alerts if a["status"] == "firing")
    assert fired == ["deviceId=rd-1", "deviceId=rd-2"]  # each once: nothing dropped, nothing doubled
    assert "Redis unavailable" in ev.log_text()


def test_load_replace_lists_and_deletes_only_the_tables_own_rows(pipeline: Pipeline, tmp_path: Path,
                                                                 redis_url: str) -> None:
    pipeline.extra = {"redis": {"url": redis_url, "keyPrefix": f"ap:[{pipeline.name}]*"}}  # glob characters
    cfg = pipeline.write()
    store = RedisLookupStore(redis.Redis.from_url(redis_url), cfg.redis.lookups_prefix)
    store.put("thresholds", [("a", {"max": 1}), ("b", {"max": 2}), ("c:d", {"max": 3})])
    store.put("thresholds2", [("a", {"max": 9})])  # another table whose name starts the same
    RedisLookupStore(redis.Redis.from_url(redis_url), "ap:x").put("thresholds", [("z", {"max": 0})])
    assert sorted(store.keys("thresholds")) == ["a", "b", "c:d"]
    f = tmp_path / "t.json"
    f.write_text('[{"key": "b", "max": 20}, {"key": "e", "max": 5}]')
    out = lookup_cli(pipeline, "load", "--table", "thresholds", "--replace", str(f))
    assert "2 row(s) written, 2 deleted" in out, out
    assert sorted(store.keys("thresholds")) == ["b", "e"]
    assert store.fetch([("thresholds", "b"), ("thresholds", "a"), ("thresholds2", "a")]) == [
        {"max": 20}, None, {"max": 9}]
    rows = [orjson.loads(line) for line in lookup_cli(pipeline, "get", "--table", "thresholds").splitlines()]
    assert rows == [{"key": "b", "row": {"max": 20}}, {"key": "e", "row": {"max": 5}}]
    assert "2 row(s) deleted" in lookup_cli(pipeline, "delete", "--table", "thresholds", "--all")
    assert list(store.keys("thresholds")) == [] and store.get("thresholds2", "a") == {"max": 9}
