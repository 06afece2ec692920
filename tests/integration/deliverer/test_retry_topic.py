"""The retry topic: a channel that is down for a long time is parked there, so the other channels keep
receiving and the alerts topic's committed offset keeps advancing; when it comes back it gets every
alert exactly once. Without a retry topic the same dead channel holds the commit frontier. kill -9
while deliveries are parked loses nothing."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.deliverer.conftest import (
    Pipeline,
    deliverer_process,
    kill9,
    make_alert,
    running_deliverer,
    terminate,
    webhook,
)
from tests.integration.deliverer.crashes import check_repeats, unmarked
from tests.receivers import HttpReceiver, Recorder, Reply, start_http_receiver, wait_until

pytestmark = pytest.mark.integration

LONG_RETRY = {"maxAttempts": 100, "maxAge": "10m", "initialBackoff": "100ms", "maxBackoff": "1s"}


@pytest.fixture
async def second_receiver() -> AsyncIterator[HttpReceiver]:
    r = await start_http_receiver()
    try:
        yield r
    finally:
        await r.stop()


def retry_lag(p: Pipeline, group: str) -> int:
    """Records on the retry topic not yet committed by ``group``."""
    topic = p.config.kafka.topics.retry
    assert topic
    c = Consumer({"bootstrap.servers": p.bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, i) for i in range(2)]
        lag = 0
        for tp in c.committed(tps, timeout=10):
            _, high = c.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


def keys_accepted(rec: Recorder, keys: set[str]) -> bool:
    return keys <= set(rec.accepted_by_key)


async def test_a_dead_channel_is_parked_and_the_others_and_the_offsets_move_on(
    pipeline: Pipeline, receiver: HttpReceiver, second_receiver: HttpReceiver
) -> None:
    dead = second_receiver
    await dead.down()  # connection refused until up()
    pipeline.update(
        channels=[
            webhook("up", receiver.url("/webhook/up"), rateLimitPerSecond=10_000),
            webhook("down", dead.url("/webhook/down"), rateLimitPerSecond=10_000, retry=LONG_RETRY),
        ]
    )
    n = 600
    waves = [[make_alert(w * n + i, ["up", "down"]) for i in range(n)] for w in range(2)]
    group = pipeline.group()
    # max_inflight far below the alerts sent: in-memory retries would stop consuming at ~100
    async with running_deliverer(
        pipeline, max_inflight=100, breaker_threshold=3, breaker_cooldown=0.5, commit_interval=0.05
    ) as d:
        for w, alerts in enumerate(waves, 1):
            pipeline.produce(alerts)
            await wait_until(
                lambda w=w: len(receiver.recorder.accepted("/webhook/up")) == w * n,  # type: ignore[misc]
                60,
                f"wave {w} delivered to the healthy channel",
            )
            await wait_until(
                lambda w=w: pipeline.committed(group) == w * n,  # type: ignore[misc]
                60,
                f"alerts topic committed through wave {w} while `down` is still down",
            )
        assert dead.recorder.items == []
        parked = pipeline.parked()
        assert parked and {p.channel for p, _ in parked} == {"down"}
        assert all(p.hops >= 1 and p.not_before_ms > 0 and p.origin_ms > 0 for p, _ in parked)
        assert d._channels["down"].breaker.state.name in ("OPEN", "HALF_OPEN")
        assert not [e for e in pipeline.audit() if e.decision == "dead_lettered"]

        await dead.up()
        # the alerts topic is committed past every alert: what `down` gets now comes from the retry topic
        want = {a.delivery_key("down") for wave in waves for a in wave}
        await wait_until(
            functools.partial(keys_accepted, dead.recorder, want), 120, "every alert delivered to `down`"
        )
        # whatever is still parked comes due within maxBackoff and finds the delivered mark
        await wait_until(lambda: retry_lag(pipeline, group) == 0, 60, "retry topic consumed and committed")
    assert dead.recorder.duplicates() == 0, "a parked delivery was sent twice"
    assert set(dead.recorder.accepted_by_key) == want
    assert receiver.recorder.duplicates() == 0
    assert not pipeline.dead_letters()
    parked_decisions = [e for e in pipeline.audit() if e.decision == "parked"]
    assert parked_decisions and all(e.channel == "down" for e in parked_decisions)


@pytest.fixture
def no_retry_pipeline(
    kafka_bootstrap: str, redis_url: str, unique: str, secrets_dir: Path, tmp_path: Path
) -> Pipeline:
    p = Pipeline(
        kafka_bootstrap, redis_url, unique, secrets_dir, tmp_path / "pipeline.json", retry_topic=False
    )
    assert p.config.kafka.topics.retry is None
    return p


async def test_without_a_retry_topic_the_dead_channel_holds_the_frontier(
    no_retry_pipeline: Pipeline, receiver: HttpReceiver, second_receiver: HttpReceiver
) -> None:
    """The problem the retry topic solves (and proof that the test above can fail)."""
    pipeline = no_retry_pipeline
    await second_receiver.down()
    pipeline.update(
        channels=[
            webhook("up", receiver.url("/webhook/up"), rateLimitPerSecond=10_000),
            webhook("down", second_receiver.url("/webhook/down"), retry=LONG_RETRY),
        ]
    )
    n = 600
    async with running_deliverer(pipeline, max_inflight=100, breaker_threshold=3, commit_interval=0.05):
        pipeline.produce([make_alert(i, ["up", "down"]) for i in range(n)])
        await wait_until(lambda: len(receiver.recorder.accepted("/webhook/up")) >= 50, 60, "some delivered")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert pipeline.committed(pipeline.group()) == 0
        assert len(receiver.recorder.accepted("/webhook/up")) < n, "consuming should have paused"


@pytest.mark.timeout(600)
async def test_kill_9_while_deliveries_are_parked_loses_nothing(
    pipeline: Pipeline, receiver: HttpReceiver, tmp_path: Path
) -> None:
    n = 3000
    pipeline.update(
        channels=[
            webhook("ok", receiver.url("/webhook/ok"), rateLimitPerSecond=100_000, maxConcurrency=64),
            webhook("flaky", receiver.url("/webhook/flaky"), maxConcurrency=64, retry=LONG_RETRY),
        ],
        kafka={
            **pipeline.config.kafka.model_dump(mode="json", by_alias=True),
            "clientOptions": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        },
    )
    receiver.set_default("/webhook/flaky", Reply(503))
    alerts = [make_alert(i, ["ok", "flaky"]) for i in range(n)]
    ok = {a.delivery_key("ok") for a in alerts}
    flaky = {a.delivery_key("flaky") for a in alerts}
    pipeline.produce(alerts)
    rec = receiver.recorder
    log = tmp_path / "deliverer.log"
    extra = ("--breaker-cooldown", "1", "--breaker-threshold", "3")
    proc = deliverer_process(pipeline, *extra, log=log)
    kills = 0
    at_kill: list[set[str]] = []  # per kill: taken by the receiver, not marked delivered
    try:
        # 1: kill while the healthy channel is half way and `flaky` is being parked
        await wait_until(lambda: len(rec.accepted("/webhook/ok")) >= n // 2, 180, "half of `ok`")
        await wait_until(lambda: len(pipeline.parked()) >= 50, 60, "deliveries parked")
        kill9(proc)
        kills += 1
        await asyncio.sleep(0.3)  # what the dead process had on the wire reaches the receiver
        at_kill.append(unmarked(pipeline, Counter(rec.accepted_by_key)))
        proc = deliverer_process(pipeline, *extra, log=log)
        await wait_until(functools.partial(keys_accepted, rec, ok), 180, "all of `ok`")
        # 2: kill while only parked deliveries cycle through the retry topic
        await asyncio.sleep(2)
        kill9(proc)
        kills += 1
        await asyncio.sleep(0.3)  # what the dead process had on the wire reaches the receiver
        at_kill.append(unmarked(pipeline, Counter(rec.accepted_by_key)))
        proc = deliverer_process(pipeline, *extra, log=log)
        await asyncio.sleep(2)
        receiver.set_default("/webhook/flaky", None)  # `flaky` recovers
        # 3: kill while the parked deliveries are being delivered
        await wait_until(lambda: len(set(rec.accepted_by_key) & flaky) >= n // 4, 180, "a quarter of `flaky`")
        kill9(proc)
        kills += 1
        await asyncio.sleep(0.3)  # what the dead process had on the wire reaches the receiver
        at_kill.append(unmarked(pipeline, Counter(rec.accepted_by_key)))
        proc = deliverer_process(pipeline, *extra, log=log)
        await wait_until(functools.partial(keys_accepted, rec, flaky), 300, "all of `flaky`")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == n, 60, "alerts topic committed")
    except AssertionError:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        terminate(proc)
    assert set(rec.accepted_by_key) == ok | flaky, "lost deliveries"
    assert all(r.key in ok | flaky for r in rec.items)
    dups = check_repeats(Counter(rec.accepted_by_key), at_kill, 2 * 64)  # two channels' slots
    assert dups == rec.duplicates()
    print(
        f"retry-topic crash test: {n} alerts x 2 channels, {kills} kill -9, 0 lost, {dups} duplicates"
        f" (taken-not-marked at the kills: {[len(u) for u in at_kill]})"
    )
    assert not pipeline.dead_letters()
