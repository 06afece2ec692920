# mypy: disable-error-code="union-attr, index, arg-type"
"""Latency smoke on the whole system, asserting behaviour, not speed: ``alertpipe generate`` sends
a stream with every edge case (duplicates, reordering, late events, gaps, clock skew, hot
devices, malformed and oversized events) through the real ingestor, Kafka, evaluator, Kafka and
deliverer (run by the operator as local pods) to a webhook receiver. Every alert of the ledger
arrives once, nothing else arrives, and each carries its per-hop stamps in order:
planned send <= ingested <= evaluated <= sent by the deliverer <= received.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from alertpipe.generate import Knobs, Scenario, generate, parse_schedule, rule_manifests
from alertpipe.generate.plan import Plan
from devstack.pipeline import (
    GROUP,
    VERSION,
    ThreadedReceiver,
    condition,
    http,
    pod_address,
    wait_for,
)
from devstack.pytest_plugin import LocalPods
from tests.e2e.tenant import tenant_pipeline

pytestmark = pytest.mark.e2e

API_KEY = "e2e-latency-key-0123456789"
SECRET = "e2e-latency-secret"  # noqa: S105 - a test fixture value
PIPELINE = "lat"


def metric_sum(address: str, name: str) -> float:
    status, body = http("GET", f"http://{address}/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_every_ledger_alert_arrives_once_with_ordered_hop_stamps(
    api: client.ApiClient,
    namespace: str,
    operator: Path,
    pod_runner: LocalPods,
    receiver: ThreadedReceiver,
    kafka_bootstrap: str,
    redis_url: str,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rec = receiver.receiver
    body = tenant_pipeline(api, namespace, receiver, pod_runner, kafka_bootstrap, redis_url, PIPELINE,
                           API_KEY,
                           SECRET)
    body["spec"].update({"allowedLateness": "5s", "idleTimeout": "2s"})  # end-of-stream timers fire soon
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", body)

    knobs = Knobs(duplicates=0.03, reorder=0.03, reorder_ms=1000, late=0.01, gaps=0.005, skew_ms=600,
                  hot_devices=2, hot_share=0.2, malformed=0.005, oversized=0.002, oversized_bytes=1_100_000)
    scenario = Scenario(namespace, PIPELINE, parse_schedule("steady:150"), 20.0, devices=30, flappers=0.3,
                        episode_every_s=6.0, episode_len_s=2.0, silent_devices=2, absence_ms=3000,
                        knobs=knobs)
    for rule in rule_manifests(Plan(scenario, 0), {"alertpipe.io/pipeline": PIPELINE}):
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules", rule)

    def ready() -> bool:
        c = condition(co, namespace, PIPELINE, "Ready")
        return c is not None and c["status"] == "True"

    try:
        wait_for(ready, "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    ingestor = f"{pod_address(core, namespace, PIPELINE, 'ingestor')}:8080"
    evaluator = f"{pod_address(core, namespace, PIPELINE, 'evaluator')}:9102"
    deliverer = f"{pod_address(core, namespace, PIPELINE, 'deliverer')}:9102"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
    wait_for(lambda: http("GET", f"http://{evaluator}/metrics")[0] == 200
             and metric_sum(evaluator, "alertpipe_evaluator_rules") == 2, "the evaluator with both rules", 60)
    wait_for(lambda: http("GET", f"http://{deliverer}/readyz")[0] == 200, "deliverer /readyz", 60)

    ledger = generate(scenario, url=f"http://{ingestor}/v1/events", api_key=API_KEY, batch=100)
    assert ledger.complete(), ledger.summary()
    oversized = [r for r in ledger.requests if r.kind == "oversized"]
    assert all(r.status == 413 for r in oversized), "a body over ingest.maxBodyBytes is refused whole"
    want = {f"{e.id}:{e.status}:ops": e for e in ledger.expected}
    assert len(want) == len(ledger.expected) > 20
    assert {e.rule for e in ledger.expected} == {"gen-hot", "gen-silent"}

    def arrived() -> set[str]:
        return {r.key for r in rec.recorder.accepted("/webhook/ops") if r.key}

    wait_for(lambda: arrived() >= set(want), "every alert of the ledger at the webhook", 90, every=0.2)
    time.sleep(3.0)  # anything extra (a duplicate, an alert no correct system raises) would come now
    got = rec.recorder.accepted("/webhook/ops")
    assert arrived() == set(want), f"unexpected: {sorted(arrived() - set(want))[:5]}"
    assert rec.recorder.duplicates() == 0 and len(got) == len(want)
    assert all(r.signature_ok for r in got)

    start = ledger.plan.start_ms
    for r in got:
        e, alert = want[r.key], r.json["alert"]
        assert (alert["eventTimeMs"], alert["startsAtMs"]) == (e.at_ms, e.starts_at_ms), r.key
        stamps: list[Any] = [alert["processedAtMs"], r.json["sentAtMs"], int(r.at * 1000) + 1]
        if e.trigger_s is not None:  # an event triggered it (not a watermark timer)
            stamps = [start + round(e.trigger_s * 1000) - 1, alert["ingestTimeMs"], *stamps]
        assert None not in stamps and stamps == sorted(stamps), (r.key, stamps)

    assert metric_sum(deliverer, 'alertpipe_e2e_latency_seconds_count{basis="ingest"') >= len(
        [e for e in ledger.expected if e.trigger_s is not None])
    assert metric_sum(evaluator, "alertpipe_evaluator_events_late_total") >= ledger.plan.counts["late"] > 0
    assert metric_sum(deliverer, "alertpipe_deliverer_read_delay_seconds_count") >= len(want)
