# mypy: disable-error-code="union-attr, index, arg-type"
"""A whole pipeline on secured infrastructure, with known secret values, then a search for them.

Kafka speaks SASL/SCRAM-SHA-512 over TLS and Redis TLS with an ACL user (devstack.secure, the
devstack's own CA); every role reaches both through the shared KafkaConnection model and the
pipeline's Secrets (credentialsSecretRef, urlSecretRef). Events go in with an API key, a signed
webhook is paged, a Slack channel whose URL (a secret) cannot be reached gives up into the
dead-letter topic, and a malformed record dead-letters in the evaluator. Then every log of the run
(operator, each worker), every Event, the pipeline's and rule's status, the ConfigMap and every
dead-letter record are searched for each secret value: none may appear.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kubernetes import client

from devstack import pipeline as dp
from devstack.pytest_plugin import LocalPods
from devstack.secure import SecureKafkaServer, SecureRedisServer
from devstack.stack import Stack, StackEnv

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

API_KEY = "sec-api-key-5d1f0c2a9b7e4e61"
SIGNING_SECRET = "sec-webhook-token-8c3a4f1e"  # noqa: S105 - test fixture values, searched for below
SLACK_TOKEN = "sec-slack-token-2b9e7d41"  # noqa: S105
WRONG_KAFKA_PASSWORD = "sec-wrong-kafka-pw-71c0"  # noqa: S105
WRONG_REDIS_PASSWORD = "sec-wrong-redis-pw-3e9a"  # noqa: S105


def _records(kafka: SecureKafkaServer, topic: str) -> list[bytes]:
    c = Consumer({**kafka.client_options(), "group.id": f"reader-{time.monotonic_ns()}",
                  "enable.auto.commit": False})  # fmt: skip
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        out: list[bytes] = []
        quiet = time.monotonic() + 3
        while time.monotonic() < quiet:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    out.append(m.value() or b"")
                    headers: Any = m.headers() or []
                    out.extend(bytes(v) for _, v in headers if v)
                    quiet = time.monotonic() + 1
        return out
    finally:
        c.close()


def _pod_logs(request: pytest.FixtureRequest, devstack_env: StackEnv | None, namespace: str) -> list[Path]:
    if devstack_env is not None and devstack_env.has("pod_runner_node"):
        root = Path(devstack_env.get("run_dir"))
    else:
        stack: Stack = request.getfixturevalue("devstack")
        root = stack.run_dir
    return sorted((root / "pod-runner" / "pods").glob(f"{namespace}_*/*.log"))  # logs, not volumes


def test_secure_pipeline_pages_and_no_secret_leaks(
    request: pytest.FixtureRequest,
    api: client.ApiClient,
    namespace: str,
    operator: Path,
    pod_runner: LocalPods,
    receiver: dp.ThreadedReceiver,
    secure_kafka: SecureKafkaServer,
    secure_redis: SecureRedisServer,
    devstack_env: StackEnv | None,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)

    def get(plural: str, name: str) -> Any:
        return co.get_namespaced_custom_object(dp.GROUP, dp.VERSION, namespace, plural, name)

    rec = receiver.receiver
    rec.secrets["/webhook/ops"] = SIGNING_SECRET.encode()
    kafka_user, redis_user = secure_kafka.user, secure_redis.user
    slack_url = f"http://127.0.0.1:9/services/T0/B0/{SLACK_TOKEN}"  # the discard port: nothing answers
    for name, data in (
        ("ingest-keys", {"keys": f"{namespace}:{API_KEY}\n"}),
        ("hook", {"secret": SIGNING_SECRET}),
        ("slack", {"url": slack_url}),
        ("kafka-creds", {"sasl.username": kafka_user.username, "sasl.password": kafka_user.password}),
        ("redis", {"url": secure_redis.url}),
    ):
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
        )
    body = dp.demo_pipeline("vault", secure_kafka.sasl_bootstrap, "unused", rec.url("/webhook/ops"),
                         pod_runner.node_selector)  # fmt: skip
    spec = body["spec"]
    spec["kafka"]["clientOptions"] = {"ssl.ca.location": str(secure_kafka.ca_file)}
    spec["kafka"]["credentialsSecretRef"] = {"name": "kafka-creds", "key": "sasl.password"}
    spec["redis"] = {"urlSecretRef": {"name": "redis", "key": "url"}}
    spec["channels"].append({
        "name": "chat", "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}},
        "retry": {"maxAttempts": 2, "initialBackoff": "50ms", "maxBackoff": "100ms"},
    })  # fmt: skip
    rule = dp.demo_rule("vault")
    rule["spec"]["channels"] = ["ops", "chat"]
    co.create_namespaced_custom_object(dp.GROUP, dp.VERSION, namespace, "alertpipelines", body)
    co.create_namespaced_custom_object(dp.GROUP, dp.VERSION, namespace, "alertrules", rule)
    # and a pipeline with wrong credentials (no workers): its failures are reported, its secrets not
    wrong = {"kafka-wrong": {"sasl.username": kafka_user.username, "sasl.password": WRONG_KAFKA_PASSWORD},
             "redis-wrong": {"url": secure_redis.url.replace(redis_user.password, WRONG_REDIS_PASSWORD)}}
    for name, data in wrong.items():
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
        )
    broken = json.loads(json.dumps(body))
    broken["metadata"]["name"] = "broken"
    broken["spec"]["kafka"]["credentialsSecretRef"]["name"] = "kafka-wrong"
    broken["spec"]["redis"]["urlSecretRef"]["name"] = "redis-wrong"
    for role in ("ingestor", "evaluator", "deliverer"):
        broken["spec"][role] = {"enabled": False}
    co.create_namespaced_custom_object(dp.GROUP, dp.VERSION, namespace, "alertpipelines", broken)

    def ready() -> bool:
        c = dp.condition(co, namespace, "vault", "Ready")
        return c is not None and c["status"] == "True"

    try:
        dp.wait_for(ready, "AlertPipeline Ready=True on SASL_SSL Kafka and TLS Redis", 180)
    except AssertionError:
        status: Any = get("alertpipelines", "vault")
        raise AssertionError(f"{status.get('status')}\n{operator.read_text()[-3000:]}") from None

    def failing(type_: str) -> bool:
        c = dp.condition(co, namespace, "broken", type_)
        return c is not None and c["status"] == "False"

    for type_ in ("TopicsReady", "RedisReady"):
        dp.wait_for(functools.partial(failing, type_), f"the wrongly configured pipeline's {type_}=False", 90)
    ingestor = f"{dp.pod_address(core, namespace, 'vault', 'ingestor')}:8080"
    dp.wait_for(lambda: dp.http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)

    t0 = int(time.time() * 1000)
    d1 = [dp.event(namespace, "d1", 1, t0, 50), dp.event(namespace, "d1", 2, t0 + 6000, 95)]
    dp.post_events(ingestor, API_KEY, d1)
    dp.wait_for(lambda: rec.recorder.accepted("/webhook/ops"), "the firing alert at the webhook", 90)
    assert all(r.signature_ok for r in rec.recorder.accepted("/webhook/ops"))
    config = json.loads(core.read_namespaced_config_map("vault-config", namespace).data["config.json"])
    topics = config["kafka"]
    # a malformed record straight onto the events topic, through the same SASL_SSL listener
    p = Producer(secure_kafka.client_options())
    p.produce(topics["topics"]["events"], b'{"tenant": "x", "note": "not an event"}', b"junk")
    assert p.flush(30) == 0
    dlq_topic = topics["topics"]["deadLetter"]

    def dead_letters() -> list[bytes]:
        return _records(secure_kafka, dlq_topic)

    dlq = dp.wait_for(lambda: (r := dead_letters()) and len([x for x in r if x[:1] == b"{"]) >= 2 and r,
                   "the Slack give-up and the malformed record in the dead-letter topic", 120, every=1)
    assert any(b"malformed-event" in r for r in dlq) and any(b"chat" in r for r in dlq)

    # every place a secret could leak to
    texts: dict[str, bytes] = {"operator log": operator.read_bytes()}
    logs = _pod_logs(request, devstack_env, namespace)
    assert {p.parent.name.split("_")[1].rsplit("-", 2)[0] for p in logs} >= {
        "vault-ingestor", "vault-evaluator", "vault-deliverer"}
    texts.update({f"log {p.parent.name}/{p.name}": p.read_bytes() for p in logs})
    for ev in core.list_namespaced_event(namespace).items:
        texts[f"event {ev.reason} {ev.involved_object.name}"] = f"{ev.reason} {ev.message}".encode()
    objects = (("alertpipelines", "vault"), ("alertpipelines", "broken"), ("alertrules", "cpu-hot"))
    for plural, name in objects:
        obj = get(plural, name)
        texts[f"{plural}/{name}"] = json.dumps(obj).encode()
    texts["configmap"] = json.dumps(core.read_namespaced_config_map("vault-config", namespace).data).encode()
    texts.update({f"dead letter {i}": r for i, r in enumerate(dlq)})
    broken_status = json.dumps(get("alertpipelines", "broken")["status"])
    assert "SASL" in broken_status or "uthentication" in broken_status, broken_status  # reported
    for role, port in (("ingestor", 8080), ("evaluator", 9102), ("deliverer", 9102)):
        address = dp.pod_address(core, namespace, "vault", role)
        texts[f"{role} /metrics"] = dp.http("GET", f"http://{address}:{port}/metrics")[1]
    assert sum(len(t) for t in texts.values()) > 10_000  # the logs are there to search

    secrets: dict[str, str] = {
        "API key": API_KEY,
        "webhook signing secret": SIGNING_SECRET,
        "Slack webhook token": SLACK_TOKEN,
        "Kafka SCRAM password": kafka_user.password,
        "Redis ACL password": redis_user.password,
        "wrong Kafka password": WRONG_KAFKA_PASSWORD,
        "wrong Redis password": WRONG_REDIS_PASSWORD,
    }
    leaks = [f"{what} in {where}" for what, value in secrets.items()
             for where, text in texts.items() if value.encode() in text]  # fmt: skip
    assert not leaks, leaks
