# mypy: disable-error-code="union-attr, index, arg-type"
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
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from kubernetes import client

from devstack.pipeline import (
    GROUP,
    VERSION,
    ThreadedReceiver,
    condition,
    demo_rule,
    event,
    http,
    pod_address,
    post_events,
    wait_for,
)
from devstack.pytest_plugin import LocalPods
from tests.e2e.tenant import tenant_pipeline
from tests.promtool import check_metrics

pytestmark = pytest.mark.e2e

API_KEY = "e2e-key-0123456789abcdef"
SIGNING_SECRET = "e2e-signing-secret"  # noqa: S105 - a test fixture value


def metrics_show(address: str, needle: str) -> bool:
    status, body = http("GET", f"http://{address}/metrics")
    return status == 200 and needle in body.decode()


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
    body = tenant_pipeline(api, namespace, receiver, pod_runner, kafka_bootstrap, redis_url, "edge", API_KEY,
                           SIGNING_SECRET)
    body["spec"]["slo"] = {"latencyP99": "30s", "successRatio": 0.9, "window": "10m"}
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", body)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules", demo_rule("edge"))

    def is_true(type_: str) -> bool:
        c = condition(co, namespace, "edge", type_)
        return c is not None and c["status"] == "True"

    try:
        wait_for(lambda: is_true("Ready"), "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    ingestor = f"{pod_address(core, namespace, 'edge', 'ingestor')}:8080"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)

    # d1 fires on its second event (the first waits out the lateness bound: 5 s of event time), then
    # resolves on the third. The webhook sees each transition once, signed.
    t0 = int(time.time() * 1000)
    send = [event(namespace, "d1", 1, t0, 50), event(namespace, "d1", 2, t0 + 6000, 95)]
    assert post_events(ingestor, API_KEY, send)["accepted"] == 2
    wait_for(lambda: rec.recorder.accepted("/webhook/ops"), "the firing alert at the webhook", 60)
    post_events(ingestor, API_KEY, [event(namespace, "d1", 3, t0 + 7000, 10)])
    wait_for(lambda: len(rec.recorder.accepted("/webhook/ops")) >= 2, "the resolved alert at the webhook", 60)
    got = [r.json["alert"] for r in rec.recorder.accepted("/webhook/ops")]
    assert [a["status"] for a in got] == ["firing", "resolved"], got
    assert all(r.signature_ok for r in rec.recorder.accepted("/webhook/ops"))
    assert got[0]["id"] == got[1]["id"]
    assert "CPU 95" in got[0]["annotations"]["summary"]
    assert rec.recorder.duplicates() == 0

    # The per-tenant SLO, measured from the deliverer's metrics: both deliveries, fast, none failed
    def slo() -> dict[str, Any]:
        st = co.get_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", "edge")["status"]
        return dict(st.get("slo") or {})

    measured = wait_for(lambda: (s := slo()).get("deliveries", 0) >= 2 and s, "status.slo: 2 deliveries", 30)
    assert measured["met"] == "True" and measured["successRatio"] == 1.0, measured
    assert 0 < measured["latencyP99Seconds"] <= 30
    wait_for(lambda: is_true("SLOMet"), "SLOMet=True", 10)

    # Kill switch: delivery stops (the deliverer loads the revision that says so), the alert for d2
    # is produced by the evaluator but waits in Kafka; clearing the switch delivers it, once.
    switch = {"stopDelivery": {"reason": "e2e maintenance"}}
    co.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "alertpipelines", "edge", {"spec": {"killSwitches": switch}}
    )
    wait_for(lambda: is_true("KillSwitchActive"), "KillSwitchActive=True", 5)
    cm = core.read_namespaced_config_map("edge-config", namespace)
    config = json.loads(cm.data["config.json"])
    assert config["killSwitches"]["stopDelivery"]["reason"] == "e2e maintenance"
    deliverer = f"{pod_address(core, namespace, 'edge', 'deliverer')}:9102"
    wait_for(
        lambda: metrics_show(deliverer, f'revision="{config["revision"]}"'),
        "the deliverer running the kill-switch revision",
        5,  # a few seconds from the patch (bench/operator/killswitch.json: ~0.1 s)
    )
    before = len(rec.recorder.accepted("/webhook/ops"))
    d2_events = [event(namespace, "d2", 1, t0 + 8000, 99), event(namespace, "d2", 2, t0 + 15000, 99)]
    post_events(ingestor, API_KEY, d2_events)
    alerts_topic = config["kafka"]["topics"]["alerts"]

    def d2_produced() -> bool:
        group = f"e2e-{unique}-{time.monotonic_ns()}"
        seen = alerts_on_topic(kafka_bootstrap, alerts_topic, group)
        return any(a["groupKey"].endswith("d2") for a in seen)

    wait_for(d2_produced, "d2's alert on the alerts topic", 60, every=0.5)
    assert len(rec.recorder.accepted("/webhook/ops")) == before, "delivered while stopDelivery was on"

    clear = {"spec": {"killSwitches": {"stopDelivery": None}}}
    co.patch_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", "edge", clear)
    wait_for(lambda: len(rec.recorder.accepted("/webhook/ops")) > before, "d2's alert after the switch", 60)
    delivered = [r.json["alert"] for r in rec.recorder.accepted("/webhook/ops")]
    d2 = [a for a in delivered if a["groupKey"].endswith("d2")]
    assert [a["status"] for a in d2] == ["firing"]
    assert rec.recorder.duplicates() == 0

    # Each worker's real /metrics, after traffic (labelled series exist): Prometheus' own lint is clean
    evaluator = f"{pod_address(core, namespace, 'edge', 'evaluator')}:9102"
    for role, address in (("ingestor", ingestor), ("evaluator", evaluator), ("deliverer", deliverer)):
        status, text = http("GET", f"http://{address}/metrics")
        assert status == 200 and b"alertpipe_" in text, role
        assert check_metrics(text.decode()) == (0, ""), role
