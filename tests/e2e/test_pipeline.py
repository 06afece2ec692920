# mypy: disable-error-code="union-attr, index, no-untyped-call, arg-type, attr-defined"
"""The whole system: kubectl-apply a pipeline and a rule, POST events, the webhook is called once.

The operator (a subprocess) reconciles the AlertPipeline into topics, the config ConfigMap and
worker Deployments; the devstack's pod runner runs those pods as local ``alertpipe`` processes
(each on a loopback address of its own); events go through the real ingestor, Kafka, evaluator,
Kafka, deliverer, to a local webhook receiver that checks the HMAC signature. Then a kill switch
pauses delivery (the alert waits in Kafka) and clearing it delivers what waited, exactly once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from kubernetes import client

from devstack.podrunner import local_ip
from devstack.processes import port_open
from devstack.pytest_plugin import LocalPods
from tests.e2e.conftest import ThreadedReceiver, wait_for

pytestmark = pytest.mark.e2e

G, V = "alertpipe.io", "v1alpha1"
API_KEY = "e2e-key-0123456789abcdef"
SIGNING_SECRET = "e2e-signing-secret"  # noqa: S105 - a test fixture value


def pipeline(bootstrap: str, redis_url: str, hook_url: str, node_selector: dict[str, str]) -> dict[str, Any]:
    placed = {"nodeSelector": node_selector}
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "AlertPipeline",
        "metadata": {"name": "edge"},
        "spec": {
            "kafka": {
                "bootstrapServers": bootstrap,
                "topics": {"events": {"partitions": 3}, "alerts": {"partitions": 2}},
            },
            "redis": {"url": redis_url},
            "ingestor": placed,
            "evaluator": placed,
            "deliverer": placed,
            "ingest": {"apiKeysSecretRef": {"name": "ingest-keys", "key": "keys"}},
            "delivery": {"allowPrivateNetworks": True},
            "channels": [
                {
                    "name": "ops",
                    "webhook": {"url": hook_url, "signingSecretRef": {"name": "hook", "key": "secret"}},
                    "retry": {"initialBackoff": "50ms", "maxBackoff": "500ms"},
                }
            ],
            "ruleSelector": {"matchLabels": {"alertpipe.io/pipeline": "edge"}},
        },
    }


RULE = {
    "apiVersion": f"{G}/{V}",
    "kind": "AlertRule",
    "metadata": {"name": "cpu-hot", "labels": {"alertpipe.io/pipeline": "edge"}},
    "spec": {
        "select": {"types": ["cpu"]},
        "threshold": {"condition": "value > 80"},
        "severity": "critical",
        "channels": ["ops"],
        "annotations": {"summary": "CPU {{ value }} on {{ deviceId }}"},
    },
}


def condition(co: client.CustomObjectsApi, ns: str, type_: str) -> dict[str, Any] | None:
    obj = co.get_namespaced_custom_object(G, V, ns, "alertpipelines", "edge")
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == type_), None)


def pod_address(core: client.CoreV1Api, ns: str, component: str) -> str:
    pods = core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/component={component}").items
    running = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert len(running) == 1, [p.metadata.name for p in pods]
    return local_ip(running[0].metadata.uid)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            raw = resp.read()
            return int(resp.status), raw
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def post_events(ingestor: str, events: list[dict[str, Any]]) -> None:
    status, body = http(
        "POST",
        f"http://{ingestor}:8080/v1/events",
        "\n".join(json.dumps(e) for e in events).encode(),
        {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/x-ndjson"},
    )
    assert status == 202, (status, body)


def metrics_show(address: str, needle: str) -> bool:
    status, body = http("GET", f"http://{address}/metrics")
    return status == 200 and needle in body.decode()


def event(device: str, seq: int, ts_ms: int, value: float, tenant: str) -> dict[str, Any]:
    return {"tenant": tenant, "deviceId": device, "seq": seq, "ts": ts_ms, "type": "cpu", "value": value}


def alerts_on_topic(bootstrap: str, topic: str, group: str) -> list[dict[str, Any]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})  # fmt: skip
    try:
        c.subscribe([topic])
        out: list[dict[str, Any]] = []
        idle_until = time.monotonic() + 5
        while time.monotonic() < idle_until:
            for m in c.consume(500, timeout=0.5):
                if m.error() is None:
                    out.append(json.loads(m.value()))
                    idle_until = time.monotonic() + 1
        return out
    finally:
        c.close()


def test_apply_post_page_once_then_kill_switch_holds_and_releases(
    api: client.ApiClient,
    namespace: str,
    operator: Path,
    pod_runner: LocalPods,
    receiver: ThreadedReceiver,
    kafka_bootstrap: str,
    redis_url: str,
    unique: str,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rec = receiver.receiver
    rec.secrets["/webhook/ops"] = SIGNING_SECRET.encode()
    for name, key, value in (
        ("ingest-keys", "keys", f"{namespace}:{API_KEY}\n"),
        ("hook", "secret", SIGNING_SECRET),
    ):
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={key: value})
        )
    body = pipeline(kafka_bootstrap, redis_url, rec.url("/webhook/ops"), pod_runner.node_selector)
    co.create_namespaced_custom_object(G, V, namespace, "alertpipelines", body)
    co.create_namespaced_custom_object(G, V, namespace, "alertrules", RULE)

    ready = wait_for(
        lambda: (c := condition(co, namespace, "Ready")) is not None and c["status"] == "True" and c,
        "AlertPipeline Ready=True",
        180,
    )
    assert ready["status"] == "True", operator.read_text()[-3000:]
    ingestor = pod_address(core, namespace, "ingestor")
    wait_for(lambda: http("GET", f"http://{ingestor}:8080/readyz")[0] == 200, "ingestor /readyz", 120)

    # d1 fires on its second event (the first waits out the lateness bound: 5 s of event time), then
    # resolves on the third. The webhook sees each transition once, signed.
    t0 = int(time.time() * 1000)
    post_events(ingestor, [event("d1", 1, t0, 50, namespace), event("d1", 2, t0 + 6000, 95, namespace)])
    wait_for(lambda: rec.recorder.accepted("/webhook/ops"), "the firing alert at the webhook", 60)
    post_events(ingestor, [event("d1", 3, t0 + 7000, 10, namespace)])
    wait_for(lambda: len(rec.recorder.accepted("/webhook/ops")) >= 2, "the resolved alert at the webhook", 60)
    got = [r.json["alert"] for r in rec.recorder.accepted("/webhook/ops")]
    assert [a["status"] for a in got] == ["firing", "resolved"], got
    assert all(r.signature_ok for r in rec.recorder.accepted("/webhook/ops"))
    assert got[0]["id"] == got[1]["id"]
    assert "CPU 95" in got[0]["annotations"]["summary"]
    assert rec.recorder.duplicates() == 0

    # Kill switch: delivery stops (the deliverer loads the revision that says so), the alert for d2
    # is produced by the evaluator but waits in Kafka; clearing the switch delivers it, once.
    co.patch_namespaced_custom_object(
        G, V, namespace, "alertpipelines", "edge",
        {"spec": {"killSwitches": {"stopDelivery": {"reason": "e2e maintenance"}}}},
    )  # fmt: skip
    wait_for(
        lambda: (c := condition(co, namespace, "KillSwitchActive")) is not None and c["status"] == "True",
        "KillSwitchActive=True",
        30,
    )
    cm = core.read_namespaced_config_map("edge-config", namespace)
    config = json.loads(cm.data["config.json"])
    assert config["killSwitches"]["stopDelivery"]["reason"] == "e2e maintenance"
    deliverer = pod_address(core, namespace, "deliverer")
    wait_for(
        lambda: metrics_show(f"{deliverer}:9102", f'revision="{config["revision"]}"'),
        "the deliverer running the kill-switch revision",
        30,
    )
    before = len(rec.recorder.accepted("/webhook/ops"))
    post_events(
        ingestor, [event("d2", 1, t0 + 8000, 99, namespace), event("d2", 2, t0 + 15000, 99, namespace)]
    )
    alerts_topic = config["kafka"]["topics"]["alerts"]
    def d2_produced() -> bool:
        group = f"e2e-{unique}-{time.monotonic_ns()}"
        seen = alerts_on_topic(kafka_bootstrap, alerts_topic, group)
        return any(a["groupKey"].endswith("d2") for a in seen)

    wait_for(d2_produced, "d2's alert on the alerts topic", 60, every=0.5)
    assert len(rec.recorder.accepted("/webhook/ops")) == before, "delivered while stopDelivery was on"

    co.patch_namespaced_custom_object(
        G, V, namespace, "alertpipelines", "edge", {"spec": {"killSwitches": {"stopDelivery": None}}}
    )
    wait_for(lambda: len(rec.recorder.accepted("/webhook/ops")) > before, "d2's alert after the switch", 60)
    delivered = [r.json["alert"] for r in rec.recorder.accepted("/webhook/ops")]
    d2 = [a for a in delivered if a["groupKey"].endswith("d2")]
    assert [a["status"] for a in d2] == ["firing"]
    assert rec.recorder.duplicates() == 0
    assert port_open(8080, ingestor)
