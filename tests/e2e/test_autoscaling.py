# mypy: disable-error-code="union-attr, index, arg-type"
"""Lag-driven autoscaling with real workers: a flood of events scales the evaluator up (the pod
runner starts the new pods as processes that join the consumer group), the lag drains, and after
the scale-down window the replicas fall back; all events on one partition is a hot partition that
more replicas would not help, so the evaluator stays at one and the status says why. The deliverer
scales the same way on its alerts backlog when the receiver is slow, and every alert arrives.

Short windows and a 2 s observation interval keep each case well under a minute and a half. The
evaluator cases fill the backlog while stopEvaluation holds the evaluator at 0 (then lift it), so the
lag is there however fast the machine drains.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kubernetes import client

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import consumer_group
from devstack.pipeline import GROUP, VERSION, ThreadedReceiver, run_operator, wait_for
from devstack.pytest_plugin import LocalPods

pytestmark = pytest.mark.e2e

PARTITIONS = 6


@pytest.fixture
def scaling_operator(
    api: client.ApiClient, kubeconfig: Path, namespace: str, crds: None, tmp_path: Path
) -> Iterator[Path]:
    # CRDs just (re)applied answer 429 "storage is (re)initializing" for a moment: start the
    # operator once they list, so its first watch is not the retried one
    co = client.CustomObjectsApi(api)

    def listing() -> bool:
        try:
            co.list_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines")
            return True
        except client.ApiException:
            return False

    wait_for(listing, "AlertPipelines listable", 60, every=0.2)
    log = tmp_path / "operator.log"
    with run_operator(kubeconfig, namespace, log, ["--scale-interval", "2"]):
        yield log


def pipeline(
    name: str, bootstrap: str, redis_url: str, pods: LocalPods, role: str = "evaluator", hook: str = ""
) -> dict[str, Any]:
    """``role`` autoscaled (6 partitions in its topic), the other roles off."""
    placed = {"nodeSelector": pods.node_selector}
    autoscaling = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": PARTITIONS,
        "lagThreshold": 2000 if role == "evaluator" else 50,
        "targetDrainSeconds": 10,
        "scaleDown": {
            "stabilizationWindowSeconds": 20,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
        },
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AlertPipeline",
        "metadata": {"name": name},
        "spec": {
            "kafka": {
                "bootstrapServers": bootstrap,
                "topics": {"events": {"partitions": PARTITIONS}, "alerts": {"partitions": PARTITIONS}},
            },
            "redis": {"url": redis_url},
            "ingestor": {"enabled": False},
            "evaluator": {"enabled": False},
            "deliverer": {"enabled": False},
            role: {**placed, "autoscaling": autoscaling},
            "ruleSelector": {"matchLabels": {"alertpipe.io/pipeline": name}},
            "delivery": {"allowPrivateNetworks": True},
            "channels": [
                {"name": "ops", "webhook": {"url": hook or "http://127.0.0.1:9/x"}, "maxConcurrency": 2}
            ],
        },
    }


def rule(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AlertRule",
        "metadata": {"name": "hot", "labels": {"alertpipe.io/pipeline": name}},
        "spec": {"select": {"types": ["cpu"]}, "threshold": {"condition": "value > 1000"}, "channels": []},
    }


def flood(bootstrap: str, topic: str, tenant: str, n: int, devices: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                  "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    t0 = int(time.time() * 1000)
    for i in range(n):
        dev = f"d{i % devices}"
        ev = {"tenant": tenant, "deviceId": dev, "seq": i // devices, "ts": t0 + i // 100, "type": "cpu",
              "value": float(i % 90)}  # fmt: skip
        while True:
            try:
                p.produce(topic, orjson.dumps(ev), dev.encode())
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


def events(api: client.ApiClient, ns: str, reason: str) -> list[str]:
    return [
        str(e.message) for e in client.CoreV1Api(api).list_namespaced_event(ns).items if e.reason == reason
    ]


class Watch:
    """Polls the pipeline, its evaluator Deployment and consumer group; remembers the extremes."""

    def __init__(
        self, api: client.ApiClient, ns: str, name: str, bootstrap: str, role: str = "evaluator"
    ) -> None:
        self.co, self.apps, self.ns, self.name = client.CustomObjectsApi(api), client.AppsV1Api(api), ns, name
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.role = role
        self.group = consumer_group(ns, name, role)
        self.max_replicas = self.max_members = 0
        self.replicas_seen: list[int] = []

    def status(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.co.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.ns, "alertpipelines", self.name
        )
        return obj.get("status") or {}

    def scaling(self) -> dict[str, Any]:
        return (self.status().get("scaling") or {}).get(self.role) or {}

    def condition(self, type_: str) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions") or [] if c["type"] == type_), {})

    def replicas(self) -> int:
        n = int(self.apps.read_namespaced_deployment(f"{self.name}-{self.role}", self.ns).spec.replicas or 0)
        self.replicas_seen.append(n)
        self.max_replicas = max(self.max_replicas, n)
        return n

    def members(self) -> int:
        try:
            group = self.admin.describe_consumer_groups([self.group])[self.group].result(timeout=30)
        except KafkaException:  # the group's coordinator not there yet (a fresh cluster)
            return 0
        self.max_members = max(self.max_members, len(group.members))
        return len(group.members)

    def poll(self) -> None:
        self.replicas()
        self.members()


def start(
    api: client.ApiClient, ns: str, bootstrap: str, redis_url: str, pods: LocalPods, log: Path,
    role: str = "evaluator", hook: str = "", paused: bool = False,
) -> tuple[Watch, str]:  # fmt: skip
    """The pipeline with ``role`` autoscaled and running one replica with no lag; ``paused``: the
    evaluator held at 0 by stopEvaluation instead, so a flood waits in Kafka however fast the machine."""
    co = client.CustomObjectsApi(api)
    body = pipeline("auto", bootstrap, redis_url, pods, role, hook)
    if paused:
        body["spec"]["killSwitches"] = {"stopEvaluation": {"reason": "fill the backlog first"}}
    co.create_namespaced_custom_object(GROUP, VERSION, ns, "alertpipelines", body)
    co.create_namespaced_custom_object(GROUP, VERSION, ns, "alertrules", rule("auto"))
    w = Watch(api, ns, "auto", bootstrap, role)

    def ready() -> bool:
        if paused:
            return "pinned at 0" in str(w.scaling().get("reason")) and w.replicas() == 0
        return bool(w.scaling().get("lag") == 0 and w.members() == 1)

    try:
        wait_for(ready, f"{role} {'held at 0' if paused else 'running, no lag'}", 120, every=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status.scaling {w.scaling()}\n{log.read_text()[-2000:]}") from None
    topic = w.status()["topics"]["events" if role == "evaluator" else "alerts"]
    return w, topic


def resume(api: client.ApiClient, ns: str) -> None:
    patch = {"spec": {"killSwitches": {"stopEvaluation": None}}}
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "alertpipelines", "auto", patch
    )


def test_flood_scales_evaluators_up_then_back_down(
    api: client.ApiClient, namespace: str, scaling_operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:  # fmt: skip
    w, topic = start(api, namespace, kafka_bootstrap, redis_url, pod_runner, scaling_operator, paused=True)
    # enough that the backlog outlasts two 2 s observations after the scale-up, when the service
    # rate per replica is measured (a backlog drained within one says nothing of the speed): 300k
    # did not once the evaluator got ~2x faster (the garbage-collector policy)
    flood(kafka_bootstrap, topic, namespace, 900_000, devices=600)
    resume(api, namespace)

    def scaled_up_and_joined() -> bool:
        w.poll()
        return w.max_replicas > 1 and w.max_members > 1

    wait_for(scaled_up_and_joined, "more evaluators running in the group", 60, every=0.5)
    up = events(api, namespace, "ScaledUp")
    # from 1 once the reconcile has lifted the kill switch's 0, or from 0 if the scaler acts first
    assert up and re.search(r"evaluator: [01] -> \d+", up[0]) and "lag" in up[0], up

    def drained() -> bool:
        w.poll()
        return bool(w.scaling().get("lag", 10**9) < 2000)

    wait_for(drained, "the lag drained under lagThreshold", 90, every=0.5)
    wait_for(
        lambda: w.replicas() == 1 and w.scaling().get("desiredReplicas") == 1,
        "the evaluator back at one replica after the window",
        60,
        every=0.5,
    )  # the Deployment is patched first, status right after
    s = w.scaling()
    assert s["serviceRatePerReplica"] > 0 and s["desiredReplicas"] == 1, s
    assert w.condition("Scaling")["reason"] in ("ScaledDown", "Stable")
    down = events(api, namespace, "ScaledDown")
    assert down and any(" -> 1" in m for m in down), down
    wait_for(lambda: w.members() == 1, "the extra evaluators left the group", 60, every=0.5)
    # the reconcile never undid the scaler: replicas only moved up (from 0: the switch), then down
    changes = [b for a, b in zip(w.replicas_seen, w.replicas_seen[1:], strict=False) if a != b]
    assert len(changes) <= 5, w.replicas_seen


def test_hot_partition_is_named_and_not_scaled_for(
    api: client.ApiClient, namespace: str, scaling_operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:  # fmt: skip
    w, topic = start(api, namespace, kafka_bootstrap, redis_url, pod_runner, scaling_operator, paused=True)
    flood(kafka_bootstrap, topic, namespace, 200_000, devices=1)  # one key: one partition
    resume(api, namespace)

    def hot() -> bool:
        w.poll()
        return w.condition("HotPartition").get("status") == "True"

    wait_for(hot, "HotPartition=True", 60, every=0.5)
    message = w.condition("HotPartition")["message"]
    assert "evaluator: partition " in message and "more replicas will not drain it faster" in message

    def drained() -> bool:
        w.poll()
        return bool(w.scaling().get("lag", 10**9) < 2000)

    wait_for(drained, "the hot partition drained", 120, every=0.5)
    assert w.max_replicas == 1, w.replicas_seen


def test_slow_receiver_scales_deliverers_and_every_alert_arrives(
    api: client.ApiClient, namespace: str, scaling_operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:  # fmt: skip
    from tests.receivers.http import Reply

    receiver = ThreadedReceiver()
    try:
        receiver.receiver.set_default(
            "/webhook/slow", Reply(status=200, delay=0.1)
        )  # 2 in flight: ~20/s a deliverer
        hook = receiver.receiver.url("/webhook/slow")
        w, topic = start(
            api, namespace, kafka_bootstrap, redis_url, pod_runner, scaling_operator, "deliverer", hook
        )
        n, now = 1200, int(time.time() * 1000)
        p = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(n):
            a = Alert(
                id=f"a{i:05d}", status="firing", tenant=namespace, pipeline="auto", rule="r", severity="info",
                group_key=f"d{i}", channels=["ops"], starts_at_ms=now, event_time_ms=now, processed_at_ms=now,
            )  # fmt: skip
            p.produce(topic, a.to_json(), a.id.encode())
        assert p.flush(30) == 0

        def scaled_up_and_joined() -> bool:
            w.poll()
            return w.max_replicas > 1 and w.max_members > 1

        wait_for(scaled_up_and_joined, "more deliverers running in the group", 60, every=0.5)

        def delivered() -> set[str]:
            return {str(r.json["alert"]["id"]) for r in receiver.receiver.recorder.accepted("/webhook/slow")}

        def all_delivered() -> bool:
            w.poll()
            return len(delivered()) == n

        try:
            wait_for(all_delivered, "every alert delivered", 120, every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(delivered())} of {n}; {w.scaling().get('reason')}") from None
        wait_for(
            lambda: w.replicas() == 1, "the deliverer back at one replica after the window", 60, every=0.5
        )
        assert any("deliverer: 1 -> " in m for m in events(api, namespace, "ScaledUp"))
        assert w.scaling()["serviceRatePerReplica"] > 0
    finally:
        receiver.stop()
