"""The devstack's Kafka is a real broker: partitions, an idempotent producer, a consumer group, lag."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # not in its __all__

from devstack.kafka import KafkaServer
from devstack.processes import wait_until

pytestmark = pytest.mark.integration

N = 10_000
PARTITIONS = 6


LEADERSHIP_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
}


def _create_topic(admin: AdminClient, name: str, partitions: int) -> None:
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1)
    for fut in admin.create_topics([topic]).values():
        fut.result(timeout=30)


def _produce(bootstrap: str, topic: str, start: int, count: int) -> Counter[int]:
    """Produce keyed messages; return how many each partition acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    acked: Counter[int] = Counter()
    errors: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.partition()] += 1  # type: ignore[attr-defined]

    for i in range(start, start + count):
        while True:
            try:
                producer.produce(topic, key=f"device-{i % 97}", value=f"event-{i}", on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    return acked


def _lag(admin: AdminClient, consumer: Consumer, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])
    committed = {tp.partition: tp.offset for tp in res[group].result(timeout=30).topic_partitions}
    lag = {}
    for p in range(PARTITIONS):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        lag[p] = high - max(committed[p], 0)
    return lag


def test_keyed_messages_consumed_in_a_group_and_lag_reads_back(kafka_bootstrap: str, unique: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    _create_topic(admin, unique, PARTITIONS)
    acked = _produce(kafka_bootstrap, unique, 0, N)
    assert sum(acked.values()) == N
    assert len(acked) == PARTITIONS  # 97 keys spread over every partition

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([unique])
        seen: Counter[int] = Counter()
        partition_of_key: dict[bytes, set[int]] = defaultdict(set)
        values = set()
        deadline = time.monotonic() + 120
        while sum(seen.values()) < N and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                partition, key = msg.partition(), msg.key()
                assert partition is not None and key is not None
                seen[partition] += 1
                partition_of_key[key].add(partition)
                values.add(msg.value())
        assert sum(seen.values()) == N
        assert len(values) == N  # each message once, none duplicated by the idempotent producer
        assert seen == acked
        assert all(len(ps) == 1 for ps in partition_of_key.values())  # a key stays on one partition
        consumer.commit(asynchronous=False)

        assert _lag(admin, consumer, unique, unique) == dict.fromkeys(range(PARTITIONS), 0)

        more = _produce(kafka_bootstrap, unique, N, 600)
        lag = _lag(admin, consumer, unique, unique)
        assert sum(lag.values()) == 600
        assert lag == {p: more.get(p, 0) for p in range(PARTITIONS)}
    finally:
        consumer.close()


def test_broker_restarts_on_the_same_port_with_its_data(kafka_server: KafkaServer, unique: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})
    _create_topic(admin, unique, 2)
    _produce(kafka_server.bootstrap, unique, 0, 100)
    kafka_server.stop()
    assert not kafka_server.running()
    with pytest.raises(Exception):  # noqa: B017 - any client error: nothing answers while it is down
        AdminClient({"bootstrap.servers": kafka_server.bootstrap}).list_topics(timeout=2)
    kafka_server.start()
    admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})
    md = admin.list_topics(topic=unique, timeout=30)
    assert len(md.topics[unique].partitions) == 2
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": unique})
    highs: list[int] = []

    def read_highs() -> bool:
        # Leadership of the old partitions comes back a moment after the broker answers metadata:
        # NOT_LEADER_FOR_PARTITION until then (a retriable error, as clients treat it).
        try:
            highs[:] = [
                consumer.get_watermark_offsets(TopicPartition(unique, p), timeout=10)[1] for p in range(2)
            ]
        except KafkaException as e:
            if not e.args[0].retriable() and e.args[0].code() not in LEADERSHIP_MOVING:
                raise
            return False
        return True

    try:
        wait_until(read_highs, "watermark offsets readable after the restart", 60)
    finally:
        consumer.close()
    assert sum(highs) == 100
