"""A three-broker KRaft cluster (topics with the cluster's defaults: RF 3, min.insync.replicas 2):
the broker leading most of the events partitions is killed with SIGKILL mid-stream and started
again later. Producers with acks=all keep being acknowledged by the two in-sync replicas left,
consumers follow the new leaders, and the ledger holds."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from devstack.kafka_cluster import KafkaCluster
from devstack.pipeline import wait_for
from tests.chaos.conftest import MakeRig, scenario, verify
from tests.chaos.rig import leaders, sleep_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_kill_9_of_the_partition_leaders_broker_and_restart(
    rig: MakeRig, unique: str, kafka_cluster: KafkaCluster
) -> None:
    sc = scenario(unique, seed=41, seconds=18.0)
    # idleTimeout (default 30 s) above the failover (the dead leader fenced after 4 s on the
    # devstack, 9 s by default, then an election): with the suite's 4 s its partition looked idle,
    # its watermark moved on with the wall clock, and the events the ingestor's producer held for
    # it came late (measured: 463 late, 26 alerts missing, 18 false). Input held outside Kafka is
    # invisible to the evaluator's lag.
    r = rig(sc, bootstrap=kafka_cluster.bootstrap, replication=-1, idle_timeout="12s")
    events = r.topics()["events"]
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap, "log_level": 0})
    md = admin.list_topics(events, timeout=10)
    assert {len(p.replicas) for p in md.topics[events].partitions.values()} == {3}
    conf = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, events)])
    entries = next(iter(conf.values())).result(30)
    assert entries["min.insync.replicas"].value == "2"
    victim = leaders(kafka_cluster.bootstrap, events).most_common(1)[0][0]
    restarted = threading.Event()

    def chaos(t0: float) -> None:
        sleep_until(t0 + 5)
        with r.fault(f"kill -9 broker {victim} (leader of the events partitions)"):
            kafka_cluster.kill(victim)
            live = ",".join(n.bootstrap for n in kafka_cluster.nodes if n.running())
            # the controller fences it after broker.session.timeout.ms (9 s) and elects new leaders
            wait_for(lambda: victim not in leaders(live, events), "new leaders of the events partitions", 30)
            sleep_until(t0 + 12)
            kafka_cluster.restart(victim)
            restarted.set()

    ledger = r.stream(sc, chaos)
    assert restarted.is_set() and kafka_cluster.running()
    assert ledger.complete(), ledger.summary()
    verify(r, "kill -9 of the leaders' broker (3 brokers)", ledger, fault_end=r.faults[-1].end)


def in_sync(bootstrap: str, topic: str, replicas: int) -> bool:
    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    return all(len(p.isrs) == replicas for p in md.topics[topic].partitions.values())


def test_a_rolling_restart_of_all_three_brokers(
    rig: MakeRig, unique: str, kafka_cluster: KafkaCluster
) -> None:
    """Each broker in turn stopped (SIGTERM: a controlled shutdown hands its leaderships over) and
    started again, the next one only when every events partition is back to three in-sync replicas,
    as an operator upgrading the cluster would: the stream goes on and the ledger holds."""
    sc = scenario(unique, seed=43, seconds=30.0)
    r = rig(sc, bootstrap=kafka_cluster.bootstrap, replication=-1, idle_timeout="12s")
    events = r.topics()["events"]
    rolled: list[int] = []

    def chaos(t0: float) -> None:
        sleep_until(t0 + 3)
        with r.fault("rolling restart of brokers 1, 2, 3"):
            for node in (1, 2, 3):
                kafka_cluster.nodes[node - 1].stop()
                kafka_cluster.restart(node)
                wait_for(lambda: in_sync(kafka_cluster.bootstrap, events, 3),
                         f"three in-sync replicas after broker {node}", 60)
                rolled.append(node)

    ledger = r.stream(sc, chaos)
    assert rolled == [1, 2, 3] and kafka_cluster.running()
    assert ledger.complete(), ledger.summary()
    verify(r, "rolling restart of all three brokers", ledger, fault_end=r.faults[-1].end)
