"""A partial partition: every client (ingestor, evaluator, deliverer) loses its link to the broker
leading most of the events partitions for longer than idleTimeout, while the brokers still see
each other, so that broker stays alive and keeps its leaderships (no failover). Writes to its
partitions wait in the producers, their consumers fetch nothing; once the link heals, the ledger
holds: the events that waited are not taken for late, no alert is missing or doubled."""

from __future__ import annotations

import pytest

from devstack.kafka_cluster import KafkaCluster
from tests.chaos.conftest import MakeRig, scenario, verify
from tests.chaos.rig import leaders, sleep_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

IDLE = 8.0  # the pipeline's idleTimeout (s); the cut lasts longer
CUT = 14.0


def test_clients_cut_from_the_leaders_broker_longer_than_idle_timeout(
    rig: MakeRig, unique: str, kafka_cluster: KafkaCluster
) -> None:
    sc = scenario(unique, seed=47, seconds=26.0)
    r = rig(sc, bootstrap=kafka_cluster.bootstrap, replication=-1, idle_timeout=f"{IDLE:g}s")
    events = r.topics()["events"]
    victim = leaders(kafka_cluster.bootstrap, events).most_common(1)[0][0]

    def chaos(t0: float) -> None:
        sleep_until(t0 + 4)
        with r.fault(f"clients cut from broker {victim} for {CUT:g} s (it stays leader)"):
            kafka_cluster.cut(victim)
            try:
                sleep_until(t0 + 4 + CUT)
                direct = ",".join(n.bootstrap for n in kafka_cluster.nodes)
                assert leaders(direct, events)[victim] > 0, "the cut broker kept its leaderships"
            finally:
                kafka_cluster.heal(victim)

    ledger = r.stream(sc, chaos, retry_for=40.0)
    assert ledger.complete(), ledger.summary()
    verify(r, f"clients cut from the leaders' broker for {CUT:g} s (> idleTimeout {IDLE:g} s)", ledger,
           fault_end=r.faults[-1].end, timeout=90.0)
