"""A static group member fenced under load: a second consumer joins with the evaluator's (and the
deliverer's) group.instance.id — two pods with one name, or the broker's view after its group
coordinator died (seen in test_brokers: FENCED_INSTANCE_ID) — and leaves again. librdkafka makes
the fenced consumer fail for good (a fatal error); the worker must start a new one, not sit on a
dead consumer while alerts wait forever."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer

from devstack.pipeline import wait_for
from tests.chaos.conftest import MakeRig, scenario, verify
from tests.chaos.rig import Worker, sleep_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def impostor(bootstrap: str, w: Worker, group: str, topic: str, strategy: str) -> Consumer:
    instance = w.argv[w.argv.index("--instance-id") + 1]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.instance.id": instance,
                  "partition.assignment.strategy": strategy, "enable.auto.commit": False,
                  "session.timeout.ms": 10_000, "log_level": 0})
    c.subscribe([topic])
    return c


def test_a_fenced_static_member_starts_a_new_consumer(rig: MakeRig, unique: str) -> None:
    sc = scenario(unique, seed=51)
    r = rig(sc)
    cfg = r.config
    assert cfg is not None
    ev, dl = r.workers["evaluator"][0], r.workers["deliverer"][0]

    def chaos(t0: float) -> None:
        sleep_until(t0 + 4)
        with r.fault("static member fenced (evaluator, deliverer)"):
            twins = [
                impostor(r.bootstrap, ev, f"alertpipe-{cfg.tenant}-{cfg.pipeline}-evaluator",
                         cfg.kafka.topics.events, "range"),
                impostor(r.bootstrap, dl, f"alertpipe.{cfg.tenant}.{cfg.pipeline}.deliverer",
                         cfg.kafka.topics.alerts, "cooperative-sticky"),
            ]
            until = time.time() + 3
            while time.time() < until:
                for c in twins:
                    c.poll(0.1)
            for c in twins:
                c.close()
        wait_for(lambda: "failed for good" in ev.tail(200) and "failed for good" in dl.tail(200),
                 "both workers starting a new consumer", 30)

    ledger = r.stream(sc, chaos)
    assert ledger.complete(), ledger.summary()
    assert ev.running() and dl.running() and (ev.starts, dl.starts) == (1, 1)  # recovered in-process
    verify(r, "static member fenced", ledger, fault_end=r.faults[-1].end)
