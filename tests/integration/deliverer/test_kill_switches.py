"""Kill switches (stop delivery: alerts wait in Kafka; mute: recorded, terminal) and circuit isolation."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.deliverer.conftest import Pipeline, make_alert, running_deliverer, webhook
from tests.receivers import HttpReceiver, wait_until

pytestmark = pytest.mark.integration


async def test_stop_delivery_holds_alerts_in_kafka_and_mute_is_recorded(
    pipeline: Pipeline, receiver: HttpReceiver
) -> None:
    pipeline.update(
        channels=[
            webhook("hook", receiver.url("/webhook/hook")),
            webhook("noisy", receiver.url("/webhook/noisy")),
        ],
        killSwitches={
            "stopDelivery": {"reason": "incident 42"},
            "mutedChannels": [{"name": "noisy", "reason": "too loud"}],
        },
    )
    alerts = [make_alert(i, ["hook", "noisy"]) for i in range(20)]
    async with running_deliverer(pipeline, commit_interval=0.05):
        pipeline.produce(alerts)
        # Paused: a generous window in which nothing may be read, sent or committed.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert receiver.recorder.items == []
            await asyncio.sleep(0.1)
        assert pipeline.committed(pipeline.group()) == 0
        assert not [e for e in pipeline.audit() if e.decision == "received"]
        pipeline.update(killSwitches={"mutedChannels": [{"name": "noisy", "reason": "too loud"}]})
        # lifting the switch takes effect in a few seconds (bench/operator/killswitch.json: ~0.1 s)
        await wait_until(lambda: bool(receiver.recorder.accepted("/webhook/hook")), 3, "delivery resumed")
        await wait_until(lambda: len(receiver.recorder.accepted("/webhook/hook")) == 20, 30, "20 deliveries")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 20, 30, "offsets committed")
    assert receiver.recorder.on("/webhook/noisy") == []
    muted = [e for e in pipeline.audit() if e.decision == "muted"]
    assert len(muted) == 20 and all(e.channel == "noisy" and "too loud" in e.reason for e in muted)


async def test_one_dead_receiver_does_not_hold_up_the_others(
    pipeline: Pipeline, receiver: HttpReceiver
) -> None:
    dead = f"http://127.0.0.1:{receiver.port}/webhook/dead"
    pipeline.update(
        channels=[
            webhook(
                "dead",
                dead,
                retry={"maxAttempts": 50, "maxAge": "20s", "initialBackoff": "100ms", "maxBackoff": "1s"},
            ),
            webhook("a", receiver.url("/webhook/a"), rateLimitPerSecond=1000),
            webhook("b", receiver.url("/webhook/b"), rateLimitPerSecond=1000),
        ]
    )
    # `dead` answers 503 to everything; its circuit opens after 5 failures
    from tests.receivers import Reply

    receiver.set_default("/webhook/dead", Reply(503))
    n = 300
    async with running_deliverer(pipeline, breaker_threshold=5, breaker_cooldown=1.0) as d:
        t0 = time.monotonic()
        pipeline.produce([make_alert(i, ["dead", "a", "b"]) for i in range(n)])
        await wait_until(
            lambda: (
                len(receiver.recorder.accepted("/webhook/a")) == n
                and len(receiver.recorder.accepted("/webhook/b")) == n
            ),
            30,
            "a and b delivered",
        )
        healthy_done = time.monotonic() - t0
        # while the healthy ones finished, the dead one was held back by its open circuit:
        attempts_dead = len(receiver.recorder.on("/webhook/dead"))
        assert attempts_dead < n, f"{attempts_dead} attempts on a dead receiver: the circuit did not open"
        assert d._channels["dead"].breaker.state.name in ("OPEN", "HALF_OPEN")
    print(
        f"healthy channels: {2 * n} deliveries in {healthy_done:.2f}s; dead channel attempts {attempts_dead}"
    )
