# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, arg-type"
"""A pipeline whose Kafka, Secret or Redis is not there says so in its status and Events, within one
reconcile, and keeps retrying with backoff; librdkafka's log lines reach the operator's log rate-limited."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from kubernetes import client

from devstack.pipeline import wait_for
from devstack.processes import free_port

from .conftest import OperatorProcess
from .helpers import Cluster, pipeline_body

pytestmark = pytest.mark.integration

RECONCILE = 30  # one reconcile with Kafka down: a 10 s admin request, and some slack on 2 loaded cores


def false_with(k: Cluster, name: str, type_: str, reason: str) -> Any:
    def check() -> Any:
        c = k.condition("alertpipelines", name, type_)
        return c if c is not None and c["status"] == "False" and c["reason"] == reason else None

    return check


def test_unreachable_kafka_is_named_in_status_and_an_event_and_its_logs_are_rate_limited(
    k: Cluster, operator: OperatorProcess, redis_url: str
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    k.create(pipeline_body("nokafka", dead, redis={"url": redis_url}))
    t0 = time.monotonic()
    topics = wait_for(false_with(k, "nokafka", "TopicsReady", "KafkaUnreachable"), "TopicsReady=False KafkaUnreachable", RECONCILE)
    assert dead in topics["message"] and "Connection refused" in topics["message"], topics
    ready = k.condition("alertpipelines", "nokafka", "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "KafkaUnreachable", topics["message"])
    assert wait_for(lambda: k.events("KafkaUnreachable"), "the KafkaUnreachable Event", 10) == [topics["message"]]

    # it keeps trying, backing off, and the one Event is not repeated
    wait_for(lambda: len(re.findall(r"nokafka: cannot reach Kafka.*retrying in", operator.output())) >= 3, "three retries", 60)
    delays = [float(d) for d in re.findall(r"nokafka: cannot reach Kafka.*retrying in ([0-9.]+) s", operator.output())]
    assert delays[2] > delays[0], delays
    assert k.events("KafkaUnreachable") == [topics["message"]]
    elapsed = time.monotonic() - t0
    lines = [ln for ln in operator.output().splitlines() if "Connection refused" in ln and "FAIL" in ln]
    assert lines and all("alertpipe.operator.librdkafka" in ln for ln in lines), lines[:3]
    assert len(lines) <= 2 + elapsed / 30, (elapsed, lines)  # librdkafka reconnects ~20 times a second


def test_a_missing_secret_then_a_missing_key_are_named(k: Cluster, operator: OperatorProcess, kafka_bootstrap: str, redis_url: str) -> None:
    kafka = {"bootstrapServers": kafka_bootstrap, "credentialsSecretRef": {"name": "kafka-creds", "key": "sasl.password"}}
    k.create(pipeline_body("nosecret", kafka_bootstrap, kafka=kafka, redis={"url": redis_url}))
    c = wait_for(false_with(k, "nosecret", "TopicsReady", "SecretNotFound"), "TopicsReady=False SecretNotFound", RECONCILE)
    assert c["message"] == f"spec.kafka.credentialsSecretRef: Secret 'kafka-creds' not found in namespace {k.ns}; create it"
    assert k.condition("alertpipelines", "nosecret", "Ready")["reason"] == "SecretNotFound"
    wait_for(lambda: k.events("SecretNotFound"), "the SecretNotFound Event", 10)

    k.core.create_namespaced_secret(
        k.ns, client.V1Secret(metadata=client.V1ObjectMeta(name="kafka-creds"), string_data={"sasl.username": "u"})
    )

    def key_named() -> Any:
        c = k.condition("alertpipelines", "nosecret", "TopicsReady")
        return c if c and "key 'sasl.password' of Secret 'kafka-creds'" in c["message"] else None

    wait_for(key_named, "the missing key named (the retry re-reads the Secret)", 30)


def test_unreachable_redis_is_named_in_status_and_an_event(k: Cluster, operator: OperatorProcess, kafka_bootstrap: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    k.create(pipeline_body("noredis", kafka_bootstrap, redis={"url": f"redis://:s3cret@{dead}/0"}))
    c = wait_for(false_with(k, "noredis", "RedisReady", "RedisUnreachable"), "RedisReady=False RedisUnreachable", RECONCILE)
    assert c["message"].startswith(f"cannot reach Redis at {dead} (spec.redis): ") and "s3cret" not in c["message"]
    assert k.condition("alertpipelines", "noredis", "TopicsReady")["status"] == "True"  # Kafka is fine
    assert wait_for(lambda: k.events("RedisUnreachable"), "the RedisUnreachable Event", 10) == [c["message"]]
