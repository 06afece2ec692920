"""The receiver misbehaves under load: down for a while (5 minutes with ALERTPIPE_CHAOS_FULL=1; the
alerts wait on the retry topic, the breaker opens), slow (2 s per request), answering 500 and 429
with Retry-After. Every alert still arrives; repeats only under the same Idempotency-Key."""

from __future__ import annotations

import time

import pytest

from tests.chaos.conftest import MakeRig, outage, scenario, verify
from tests.chaos.rig import sleep_until
from tests.receivers import Reply

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_receiver_down_then_back(rig: MakeRig, unique: str) -> None:
    down_s = outage(8.0, 300.0)
    sc = scenario(unique, seed=31, seconds=10.0 + min(down_s, 10.0))
    # a budget that outlasts the outage: backoff up to 5 s, 100 attempts, 15 minutes
    retry = {"initialBackoff": "100ms", "maxBackoff": "5s" if down_s > 60 else "1s", "maxAttempts": 100,
             "maxAge": "15m"}
    r = rig(sc, channel={"retry": retry})
    hook = r.receiver

    def chaos(t0: float) -> None:
        sleep_until(t0 + 7)
        with r.fault(f"receiver down {down_s:g} s"):
            hook.call(hook.receiver.down())
            time.sleep(down_s)
            hook.call(hook.receiver.up())

    ledger = r.stream(sc, chaos)
    assert ledger.complete(), ledger.summary()
    acc = verify(r, f"receiver down {down_s:g} s", ledger, fault_end=r.faults[-1].end)
    assert acc.dead_lettered == 0
    parked = r.workers["deliverer"][0].metric("alertpipe_deliverer_parked_total")
    assert parked != 0, "nothing waited on the retry topic: the outage proved nothing"


def test_receiver_slow_then_500_and_429_with_retry_after(rig: MakeRig, unique: str) -> None:
    sc = scenario(unique, seed=32, seconds=16.0)
    r = rig(sc)
    hook, path = r.receiver, r.hook_path

    def chaos(t0: float) -> None:
        sleep_until(t0 + 6)
        with r.fault("receiver slow (2 s per request)"):
            hook.receiver.set_default(path, Reply(200, delay=2.0))
            sleep_until(t0 + 10)
            hook.receiver.set_default(path, None)
        with r.fault("receiver 500 / 429 Retry-After 1"):
            hook.receiver.script(path, [Reply(500), Reply(429, retry_after=1), Reply(503)] * 8)
            sleep_until(t0 + 14)

    ledger = r.stream(sc, chaos)
    assert ledger.complete(), ledger.summary()
    acc = verify(r, "receiver slow, then 500 / 429", ledger, fault_end=r.faults[-1].end)
    assert acc.dead_lettered == 0
    seen = hook.receiver.recorder.on(path)
    assert {x.status for x in seen} >= {200, 500, 429, 503}
    # Retry-After 1: the next attempt of a key answered 429 comes no sooner than a second later
    for i, x in enumerate(seen):
        if x.status == 429:
            nxt = next((y for y in seen[i + 1:] if y.key == x.key), None)
            assert nxt is not None and nxt.at - x.at >= 0.95, (x.key, nxt and nxt.at - x.at)
