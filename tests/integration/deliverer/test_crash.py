"""kill -9 the deliverer at random points while 10k alerts flow: 0 lost; repeats only with the same key."""

from __future__ import annotations

import asyncio
import functools
import random
from pathlib import Path

import pytest

from tests.integration.deliverer.conftest import (
    Pipeline,
    deliverer_process,
    kill9,
    make_alert,
    terminate,
    webhook,
)
from tests.receivers import HttpReceiver, Recorder, wait_until

pytestmark = pytest.mark.integration

N = 10_000


def reached(rec: Recorder, n: int) -> bool:
    return len(rec.accepted_by_key) >= n


KILLS = 4


@pytest.mark.timeout(600)
async def test_kill_9_loses_nothing_and_repeats_only_with_the_same_key(
    pipeline: Pipeline, receiver: HttpReceiver, tmp_path: Path
) -> None:
    pipeline.update(
        channels=[
            webhook("sink", receiver.url("/webhook/sink"), rateLimitPerSecond=100_000, maxConcurrency=64)
        ],
        kafka={
            **pipeline.config.kafka.model_dump(mode="json", by_alias=True),
            "clientOptions": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        },
    )
    alerts = [make_alert(i, ["sink"]) for i in range(N)]
    expected = {a.delivery_key("sink") for a in alerts}
    assert len(expected) == N
    pipeline.produce(alerts)
    rec = receiver.recorder
    rng = random.Random()
    thresholds = sorted(rng.sample(range(300, N - 300), KILLS))
    log = tmp_path / "deliverer.log"
    proc = deliverer_process(pipeline, log=log)
    try:
        for i, at in enumerate(thresholds):
            await wait_until(functools.partial(reached, rec, at), 180, f"{at} keys delivered (run {i})")
            # a random point inside the flow: some sends in flight, claims held, offsets uncommitted
            await asyncio.sleep(rng.uniform(0, 0.05))
            kill9(proc)
            print(f"kill -9 #{i + 1} after {len(rec.accepted_by_key)} keys")
            proc = deliverer_process(pipeline, log=log)
        await wait_until(lambda: len(rec.accepted_by_key) >= N, 300, "every alert delivered")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == N, 60, "all offsets committed")
    except AssertionError:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        terminate(proc)
    accepted = set(rec.accepted_by_key)
    lost = expected - accepted
    assert not lost, f"{len(lost)} alerts never delivered"
    # every request carried one of the expected keys: a repeat is always the same Idempotency-Key
    assert all(r.key in expected for r in rec.items)
    dups = rec.duplicates()
    print(
        f"crash test: {N} alerts, {KILLS} kill -9, 0 lost, {dups} successful duplicates (same key), "
        f"{len(rec.items)} requests"
    )
    assert dups <= KILLS * 64 * 3, "more duplicates than sends that can be in flight at the kills"
