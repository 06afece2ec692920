"""The evaluator's lookup cache (workers/evaluator/lookups.py): one store round trip per batch for the
rows missing or older than the TTL, rows readable past their TTL until the LRU evicts them, hit and
miss counts; the whole Evaluator loop on in-memory clients fires per device over its own threshold;
a store that fails holds the batch (nothing evaluated, the error propagates); the file formats of
``alertpipe lookup load``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from alertpipe.workers.config import PipelineConfig, StaticConfigSource
from alertpipe.workers.evaluator.clients import EvaluatorClients
from alertpipe.workers.evaluator.lookup_cli import LookupFileError, read_rows
from alertpipe.workers.evaluator.lookup_store import decode_row, encode_row
from alertpipe.workers.evaluator.lookups import LookupCache
from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions
from alertpipe.workers.rules.lookups import LookupTables
from tests.unit.evaluator.test_evaluator_seams import (
    ALERTS,
    DLQ,
    EVENTS,
    Broker,
    MemoryConsumer,
    MemoryProducer,
    MemoryState,
    send,
    transitions,
)

from ..rules.helpers import ev, rule

pytestmark = pytest.mark.unit

OVER = rule("over", select={"types": ["cpu"]},
            threshold={"condition": "value > lookup('thresholds', deviceId).max"})
PLAIN = rule("plain", threshold={"condition": "value > 1"})


class MemoryStore:
    """Rows in memory; counts round trips and the keys each asked for."""

    def __init__(self, rows: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.rows = rows
        self.trips: list[list[tuple[str, str]]] = []
        self.fail: Exception | None = None

    def fetch(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
        if self.fail is not None:
            raise self.fail
        self.trips.append(sorted(keys))
        return [self.rows.get(k) for k in keys]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_round_trip_per_batch_for_the_misses_then_hits_until_the_ttl() -> None:
    store = MemoryStore({("thresholds", "d1"): {"max": 50}})
    clock = Clock()
    metrics = EvaluatorMetrics("acme")
    cache = LookupCache(store, ttl_s=30, max_entries=100, metrics=metrics, clock=clock)
    rules = {"over": OVER, "plain": PLAIN}
    batch = [ev("d1", 0, 0), ev("d1", 1, 1), ev("d2", 0, 0), ev("d3", 0, 0, typ="mem")]
    assert cache.prefetch(rules, batch) == 2
    assert store.trips == [[("thresholds", "d1"), ("thresholds", "d2")]]  # mem is not read by OVER
    assert cache.row("thresholds", "d1") == {"max": 50}
    assert cache.row("thresholds", "d2") is None  # fetched: no such row (cached as absent)
    assert cache.prefetch(rules, batch) == 0  # within the TTL: no round trip
    assert len(store.trips) == 1
    store.rows[("thresholds", "d1")] = {"max": 70}
    clock.now += 29.9
    cache.prefetch(rules, batch)
    assert cache.row("thresholds", "d1") == {"max": 50}
    clock.now += 0.1  # the TTL: read again, once for both keys
    assert cache.prefetch(rules, batch) == 2
    assert cache.row("thresholds", "d1") == {"max": 70}
    assert (cache.hits, cache.misses) == (4, 4)
    assert cache.hit_rate() == 0.5
    assert metrics.lookup_hits._value.get() == 4  # noqa: SLF001 - the exported counter itself
    assert metrics.lookup_misses._value.get() == 4  # noqa: SLF001
    assert cache.unfetched == 0
    assert cache.row("thresholds", "never") is None
    assert cache.unfetched == 1 and metrics.lookup_unfetched._value.get() == 1  # noqa: SLF001


def test_rules_without_lookups_cost_no_round_trip_and_expired_rows_stay_readable() -> None:
    store = MemoryStore({("thresholds", "d1"): {"max": 50}})
    clock = Clock()
    cache = LookupCache(store, ttl_s=1, max_entries=2, clock=clock)
    assert cache.prefetch({"plain": PLAIN}, [ev("d1", 0, 0)]) == 0
    assert store.trips == []
    cache.prefetch({"over": OVER}, [ev("d1", 0, 0)])
    clock.now += 3600  # long past the TTL: a held event released now still finds its batch's row
    assert cache.row("thresholds", "d1") == {"max": 50}
    cache.prefetch({"over": OVER}, [ev("d2", 0, 0), ev("d3", 0, 0)])  # size 2: d1 is evicted
    assert cache.row("thresholds", "d1") is None and cache.unfetched == 1
    cache.configure(5, 1)
    assert cache.ttl == 5 and len(cache.cache) == 1


def test_a_failing_store_propagates_and_caches_nothing() -> None:
    store = MemoryStore({})
    store.fail = ConnectionError("redis down")
    cache = LookupCache(store, ttl_s=30, max_entries=10)
    with pytest.raises(ConnectionError):
        cache.prefetch({"over": OVER}, [ev("d1", 0, 0)])
    assert len(cache.cache) == 0


def config(ttl: str = "30s") -> PipelineConfig:
    return PipelineConfig.model_validate({
        "tenant": "acme", "pipeline": "main", "allowedLateness": "2s", "idleTimeout": "1h",
        "kafka": {"bootstrapServers": "127.0.0.1:1", "topics": {
            "events": EVENTS, "alerts": ALERTS, "late": "l", "deadLetter": DLQ, "audit": "u"}},
        "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "p"},
        "lookups": {"ttl": ttl},
        "rules": [{"name": "over", "spec": {"threshold": {
            "condition": "value > lookup('thresholds', deviceId).max"}}}],
    }).with_revision()  # fmt: skip


def test_the_evaluator_fires_each_device_over_its_own_threshold() -> None:
    broker, state = Broker(), MemoryState()
    store = MemoryStore({("thresholds", "d1"): {"max": 50}, ("thresholds", "d2"): {"max": 90}})
    t0 = int(time.time() * 1000) - 120_000
    for seq, dt, values in ((1, 0, (60, 60, 60)), (2, 5_000, (60, 95, 60)), (3, 10_000, (10, 10, 10)),
                            (4, 20_000, (10, 10, 10))):
        for dev, value in zip(("d1", "d2", "d3"), values, strict=True):  # d3 has no row: never fires
            send(broker, seq, t0 + dt, value, device=dev)
    evaluator = Evaluator(StaticConfigSource(config()), options=EvaluatorOptions(checkpoint_interval=0.05),
                          clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), state,
                                                   lookups=store))
    stop = threading.Event()
    t = threading.Thread(target=evaluator.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while len(transitions(broker)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(20)
    assert sorted(transitions(broker)) == [("deviceId=d1", "firing"), ("deviceId=d1", "resolved"),
                                           ("deviceId=d2", "firing"), ("deviceId=d2", "resolved")]
    # one round trip for the first batch's three rows; later batches hit the cache
    assert store.trips[0] == [("thresholds", "d1"), ("thresholds", "d2"), ("thresholds", "d3")]
    assert all(len(trip) <= 3 for trip in store.trips) and len(store.trips) <= 3


def test_a_store_that_fails_stops_the_loop_before_the_batch_is_evaluated() -> None:
    broker, state = Broker(), MemoryState()
    store = MemoryStore({("thresholds", "d1"): {"max": 50}})
    store.fail = ConnectionError("redis down")
    t0 = int(time.time() * 1000) - 120_000
    send(broker, 1, t0, 60)
    evaluator = Evaluator(StaticConfigSource(config()), options=EvaluatorOptions(checkpoint_interval=0.05),
                          clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), state,
                                                   lookups=store))
    with pytest.raises(ConnectionError):
        evaluator.run(threading.Event())  # the CLI holds and starts again from the checkpoint
    assert transitions(broker) == []
    assert evaluator.positions.get(0, 0) == 0  # nothing evaluated, nothing committed past it


class FailsOnce(MemoryStore):
    calls = 0

    def fetch(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("redis down")
        return super().fetch(keys)


def test_a_batch_whose_rows_failed_is_evaluated_before_any_later_one() -> None:
    """Redis fails for one batch and answers again: the final drain evaluates that batch first, so
    the checkpoint that follows covers it (it is never skipped in favour of later batches)."""
    broker, state = Broker(), MemoryState()
    store = FailsOnce({("thresholds", "d1"): {"max": 50}})
    t0 = int(time.time() * 1000) - 120_000
    for seq in range(1, 9):
        send(broker, seq, t0 + seq * 1000, 60)
    evaluator = Evaluator(StaticConfigSource(config()),
                          options=EvaluatorOptions(checkpoint_interval=0.05, batch_size=2),
                          clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), state,
                                                   lookups=store))
    with pytest.raises(ConnectionError):
        evaluator.run(threading.Event())
    saved = orjson.loads(state.chains[0][0])
    assert saved["offset"] == 2  # the failed batch, evaluated by the drain: covered, not skipped
    assert store.trips == [[("thresholds", "d1")]]
    # the next evaluator (the CLI's restart) goes on from there: d1 fires once
    evaluator = Evaluator(StaticConfigSource(config()), options=EvaluatorOptions(checkpoint_interval=0.05),
                          clients=EvaluatorClients(MemoryConsumer(broker), MemoryProducer(broker), state,
                                                   lookups=store))
    stop = threading.Event()
    t = threading.Thread(target=evaluator.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not transitions(broker) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    stop.set()
    t.join(20)
    assert transitions(broker) == [("deviceId=d1", "firing")]


# --- the files `alertpipe lookup load` reads --------------------------------------------------------


def test_csv_rows_are_typed_and_keyed_by_the_first_column(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("deviceId,max,site,muted,note\nd1,80,berlin,true,\nd2,90.5,paris,false,x y\n7,1e3,,,\n")
    assert read_rows(f) == [("d1", {"max": 80, "site": "berlin", "muted": True}),
                            ("d2", {"max": 90.5, "site": "paris", "muted": False, "note": "x y"}),
                            ("7", {"max": 1000.0})]
    with pytest.raises(LookupFileError, match="line 4: the key must have 1..512 characters"):
        read_rows(f, "site")  # row 7 has no site
    f.write_text("deviceId,max,site\nd1,80,berlin\n")
    assert read_rows(f, "site") == [("berlin", {"deviceId": "d1", "max": 80})]
    with pytest.raises(LookupFileError, match="no column 'nope'"):
        read_rows(f, "nope")


def test_json_rows_as_an_object_or_a_list(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text('{"d1": {"until": 1767225600000, "reason": "firmware"}}')
    assert read_rows(f) == [("d1", {"until": 1767225600000, "reason": "firmware"})]
    f.write_text('[{"deviceId": "d1", "max": 5}, {"deviceId": 7, "max": 6}]')
    assert read_rows(f, "deviceId") == [("d1", {"max": 5}), ("7", {"max": 6})]
    with pytest.raises(LookupFileError, match=r"\[0\]: an object with the key field 'key'"):
        read_rows(f)
    f.write_text('[{"key": "a"}, {"key": "a"}]')
    with pytest.raises(LookupFileError, match="key 'a' appears twice"):
        read_rows(f)


def test_a_row_keeps_its_types_through_the_hash_encoding() -> None:
    row = {"max": 80.5, "n": 3, "site": "berlin", "muted": True, "tags": ["a"], "none": None}
    raw = {k.encode(): v for k, v in encode_row(row).items()}
    assert decode_row(raw) == row
    assert decode_row({}) is None
    assert decode_row({b"text": b"not json"}) == {"text": "not json"}
    assert LookupTables({"t": {"k": row}}).row("t", "k") == row
