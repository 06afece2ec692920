"""Redis under load: a crash and restart (AOF keeps dedup keys, checkpoints and delivery marks), and
Redis away for a while (30 s with ALERTPIPE_CHAOS_FULL=1): the evaluator and the deliverer hold —
alive, /readyz 503 naming Redis, ``alertpipe_<stage>_redis_up`` 0 — and catch up once it is back;
the ingestor never needed it. The deliverer is stopped before the outage so that alerts wait for
it, and both are started again while Redis is away: a worker that starts without Redis must wait
for it too, not exit."""

from __future__ import annotations

import time

import pytest

from devstack.redis import RedisServer
from tests.chaos.conftest import MakeRig, outage, scenario, verify
from tests.chaos.rig import sleep_until, status_of

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_redis_crash_and_restart_with_aof(rig: MakeRig, unique: str, redis_server: RedisServer) -> None:
    sc = scenario(unique, seed=21)
    r = rig(sc)

    def chaos(t0: float) -> None:
        sleep_until(t0 + 6)
        with r.fault("redis kill -9 + restart"):
            redis_server.restart(crash=True)

    ledger = r.stream(sc, chaos)
    assert ledger.complete(), ledger.summary()
    verify(r, "Redis kill -9, restart (AOF)", ledger, fault_end=r.faults[-1].end)


def test_redis_unavailable_stages_hold_say_so_and_recover(
    rig: MakeRig, unique: str, redis_server: RedisServer
) -> None:
    down_s = outage(8.0, 30.0)
    sc = scenario(unique, seed=22, seconds=12.0 + down_s)
    r = rig(sc)
    ev, dl, ing = (r.workers[role][0] for role in ("evaluator", "deliverer", "ingestor"))
    seen: dict[str, set[int]] = {"evaluator": set(), "deliverer": set(), "ingestor": set()}
    up: dict[str, set[float]] = {"evaluator": set(), "deliverer": set()}  # -1: not serving yet
    held: list[int] = []
    rec = r.receiver.receiver.recorder

    def chaos(t0: float) -> None:
        sleep_until(t0 + 6)  # the first episodes are over the threshold after the warm-up (7 s)
        dl.kill9()  # alerts pile up on the alerts topic: the deliverer has work when Redis goes
        sleep_until(t0 + 9)
        with r.fault(f"redis down {down_s:g} s"):
            redis_server.stop()
            until = time.time() + down_s
            ev.kill9()  # both start again without Redis: they must wait for it, not exit
            ev.start()
            dl.start()
            while time.time() < until:
                for w in (ev, dl, ing):
                    assert w.running(), f"{w.role} exited while Redis was down:\n{w.tail()}"
                    seen[w.role].add(status_of(w.port, "/readyz"))
                    if w is not ing:
                        up[w.role].add(w.metric(f"alertpipe_{w.role}_redis_up"))
                held.append(len(rec.accepted(r.hook_path)))
                time.sleep(0.3)
            redis_server.start()

    ledger = r.stream(sc, chaos)
    assert ledger.complete(), ledger.summary()  # the ingestor kept taking events
    assert seen["ingestor"] == {200}, seen
    assert 503 in seen["evaluator"] and 503 in seen["deliverer"], seen  # not ready, and /readyz says why
    assert 0.0 in up["evaluator"] and 0.0 in up["deliverer"] and 1.0 not in up["deliverer"], up
    assert len(set(held[len(held) // 2:])) == 1, "a delivery went out without a claim while Redis was down"
    assert "redis unavailable" in dl.tail(400), "the deliverer had nothing to hold: the test proved nothing"
    acc = verify(r, f"Redis unavailable {down_s:g} s", ledger, fault_end=r.faults[-1].end)
    assert acc.dead_lettered == 0  # held, not dropped
    assert ev.running() and dl.running() and (ev.starts, dl.starts) == (2, 2)
