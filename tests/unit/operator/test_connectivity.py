# ruff: noqa: E501
"""Why a pipeline cannot reach Kafka or Redis: the condition reason and message, and the rate limit
on librdkafka's log lines."""

from __future__ import annotations

import logging

import pytest

from alertpipe.operator.clientlogs import RateLimitFilter
from alertpipe.operator.decisions.conditions import Observed, pipeline_conditions
from alertpipe.operator.decisions.connectivity import kafka_failure, redis_failure, secret_not_found
from alertpipe.operator.redis_check import redis_address

pytestmark = pytest.mark.unit

REFUSED = (
    "_TRANSPORT",
    "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
)
TIMED_OUT = ("_TIMED_OUT", "Failed while waiting for controller: Local: Timed out")


def test_a_timeout_with_refused_connections_is_unreachable_and_names_address_and_error() -> None:
    f = kafka_failure("describe topic t", "127.0.0.1:1", *TIMED_OUT, [REFUSED, ("_ALL_BROKERS_DOWN", "1/1 brokers are down")])
    assert f.reason == "KafkaUnreachable"
    assert f.message == (
        "cannot reach Kafka at 127.0.0.1:1 (spec.kafka.bootstrapServers): "
        "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    )  # no "(after 0ms ...)": the message stays the same from one attempt to the next


def test_a_bare_timeout_is_unreachable_with_the_clients_words() -> None:
    f = kafka_failure("describe topic t", "k:9092", *TIMED_OUT)
    assert f.reason == "KafkaUnreachable" and "k:9092" in f.message and "Timed out" in f.message


def test_a_failed_sasl_handshake_is_auth_failed_even_when_the_call_only_timed_out() -> None:
    auth = ("_AUTHENTICATION", "sasl_ssl://k:9093/bootstrap: SASL authentication error: Authentication failed")
    f = kafka_failure("describe topic t", "k:9093", *TIMED_OUT, [REFUSED, auth])
    assert f.reason == "AuthFailed"
    assert "k:9093" in f.message and "Authentication failed" in f.message
    assert "spec.kafka.credentialsSecretRef" in f.message


def test_a_denied_topic_is_topic_authorization_failed_naming_the_call() -> None:
    f = kafka_failure("create topic t-events", "k:9092", "TOPIC_AUTHORIZATION_FAILED", "Authorization failed")
    assert f.reason == "TopicAuthorizationFailed"
    assert "create topic t-events" in f.message and "k:9092" in f.message


def test_another_broker_error_keeps_its_code() -> None:
    f = kafka_failure("grow topic t", "k:9092", "INVALID_PARTITIONS", "bad")
    assert f.reason == "KafkaError" and "INVALID_PARTITIONS" in f.message


def test_secret_not_found_names_field_secret_key_and_namespace() -> None:
    f = secret_not_found("spec.kafka.credentialsSecretRef", "kafka-creds", "sasl.password", "team-a")
    assert f.reason == "SecretNotFound"
    assert f.message == (
        "spec.kafka.credentialsSecretRef: key 'sasl.password' of Secret 'kafka-creds' not found in namespace team-a; create it"
    )
    assert "Secret 'gone' not found" in secret_not_found("f", "gone", None, "ns").message


def test_redis_failures_and_the_address_hides_the_password() -> None:
    assert redis_address("redis://:hunter2@redis.example:6380/0") == "redis.example:6380"
    assert redis_address("rediss://r") == "r:6379"
    down = redis_failure("127.0.0.1:1", "Error 111 connecting to 127.0.0.1:1. Connection refused.")
    assert down.reason == "RedisUnreachable" and "cannot reach Redis at 127.0.0.1:1" in down.message
    assert redis_failure("r:6379", "invalid username-password pair").reason == "RedisAuthFailed"


def test_conditions_carry_the_reason_to_topics_ready_and_ready() -> None:
    by = {w.type: w for w in pipeline_conditions(Observed(topics_error="cannot reach Kafka at x", topics_reason="KafkaUnreachable"))}
    assert (by["TopicsReady"].status, by["TopicsReady"].reason) == ("False", "KafkaUnreachable")
    assert (by["Ready"].status, by["Ready"].reason, by["Ready"].message) == ("False", "KafkaUnreachable", "cannot reach Kafka at x")


def test_redis_down_makes_redis_ready_false_and_ready_follows_the_workers() -> None:
    o = Observed(redis_error="cannot reach Redis at r:1", redis_reason="RedisUnreachable")
    by = {w.type: w for w in pipeline_conditions(o)}
    assert (by["RedisReady"].status, by["RedisReady"].reason) == ("False", "RedisUnreachable")
    assert by["Ready"].status == "True"  # the workers' probes PING Redis: WorkersAvailable says it
    short = Observed(redis_error="x", desired_replicas={"evaluator": 1}, available_replicas={"evaluator": 0})
    assert {w.type: w for w in pipeline_conditions(short)}["Ready"].reason == "WaitingForReplicas"
    fine = {w.type: w for w in pipeline_conditions(Observed())}
    assert fine["RedisReady"].status == "True" and fine["Ready"].status == "True"


def _record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("alertpipe.operator.librdkafka", level, __file__, 1, msg, (), None)


def test_rate_limit_lets_one_line_per_kind_per_window_and_counts_the_rest() -> None:
    now = [0.0]
    f = RateLimitFilter(window=30.0, clock=lambda: now[0])
    line = "FAIL [rdkafka#producer-1] [thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect failed"
    other = "FAIL [rdkafka#producer-1] [thrd:127.0.0.1:2/bootstrap]: 127.0.0.1:2/bootstrap: Connect failed"
    passed = []
    for i in range(600):  # 20 a second for 30 s
        now[0] = i / 20
        r = _record(line)
        if f.filter(r):
            passed.append(r.getMessage())
    assert passed == [line]
    assert f.filter(_record(other))  # another broker is another kind
    now[0] = 30.0
    r = _record(line)
    assert f.filter(r) and r.getMessage() == f"{line} (599 more like it in the last 30 s)"
