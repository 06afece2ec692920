"""Fixtures of the chaos suite: one receiver for the session, a Rig per test on the session's Kafka
and its own (restartable) Redis, outage lengths shortened unless ALERTPIPE_CHAOS_FULL=1."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alertpipe.generate import Knobs, Scenario, parse_schedule
from devstack.pipeline import ThreadedReceiver, wait_for
from devstack.redis import RedisServer
from tests.chaos.accounting import Account, account, check, read_outcome
from tests.chaos.rig import Rig

FULL = os.environ.get("ALERTPIPE_CHAOS_FULL") == "1"


def outage(short: float, full: float) -> float:
    """The issue's outage length with ALERTPIPE_CHAOS_FULL=1, else the CI one."""
    return full if FULL else short


def scenario(name: str, seconds: float = 14.0, rate: int = 120, seed: int = 7, **kw: Any) -> Scenario:
    """A small stream: 40 devices, a third of them flapping over gen-hot every 4 s, two silent ones,
    a few duplicates and reordered events (the evaluator must still raise each alert once)."""
    knobs = kw.pop("knobs", Knobs(duplicates=0.02, dup_delay_ms=800, reorder=0.02, reorder_ms=800))
    return Scenario("chaos", name, parse_schedule(f"steady:{rate}"), seconds, devices=40, seed=seed,
                    flappers=0.35, episode_every_s=4.0, episode_len_s=1.2, silent_devices=2,
                    absence_ms=2500, knobs=knobs, **kw)


@pytest.fixture(scope="session")
def chaos_receiver() -> Iterator[ThreadedReceiver]:
    r = ThreadedReceiver()
    yield r
    r.stop()


MakeRig = Callable[..., Rig]


@pytest.fixture
def rig(kafka_bootstrap: str, redis_server: RedisServer, chaos_receiver: ThreadedReceiver, unique: str,
        tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeRig]:
    """``rig(scenario, evaluators=1, deliverers=1, **Rig fields)``: topics, config and workers up."""
    made: list[Rig] = []

    def make(sc: Scenario, evaluators: int = 1, deliverers: int = 1, **kw: Any) -> Rig:
        kw.setdefault("bootstrap", kafka_bootstrap)
        r = Rig(sc.pipeline, redis_url=redis_server.url, receiver=chaos_receiver, work=tmp_path / sc.pipeline,
                **kw)
        made.append(r)
        r.setup(sc)
        r.start(evaluators, deliverers)
        return r

    yield make
    failed = request.node.stash.get(FAILED, False)
    for r in made:
        if failed:
            print(r.logs())
        r.stop()


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call" and rep.failed:
        item.stash[FAILED] = True
    return rep


def settle(r: Rig, ledger: Any, timeout: float = 60.0) -> None:
    """Wait until the receiver has every expected alert (or the timeout) and both groups committed
    everything, then a little longer: a late repeat or an extra page would arrive now."""
    rec = r.receiver.receiver.recorder
    want = {f"{e.id}:{e.status}:ops" for e in ledger.expected}

    def arrived() -> bool:
        got = {x.key for x in rec.accepted(r.hook_path)}
        return want <= got

    try:
        wait_for(arrived, "every expected alert at the receiver", timeout, every=0.25)
        wait_for(lambda: r.committed_all("evaluator") and r.committed_all("deliverer"), "offsets committed",
                 30, every=0.5)
    except AssertionError:
        pass  # the ledger table says what is missing
    import time

    time.sleep(2.0)


def verify(r: Rig, fault: str, ledger: Any, fault_end: float | None = None, timeout: float = 60.0) -> Account:
    settle(r, ledger, timeout)
    assert r.config is not None
    topics = r.topics()
    outcome = read_outcome(r.bootstrap, topics, r.receiver.receiver.recorder, r.hook_path)
    acc = account(fault, ledger, outcome, fault_end=fault_end)
    check(acc)
    return acc
