# mypy: disable-error-code="union-attr, index, arg-type"
"""spec.tracing through the operator: kubectl-apply a pipeline with tracing and a rule, the operator
writes the tracing section into the config and mounts the collector's headers Secret in the three
roles, the workers (local pods) export to a local OTLP/HTTP receiver, and one POSTed event that
pages is one trace ingest → evaluate → deliver, the webhook request carrying the delivery span."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
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
    wait_for,
)
from devstack.pytest_plugin import LocalPods
from tests.e2e.tenant import tenant_pipeline
from tests.receivers.otlp import OtlpReceiver, start_otlp_receiver

pytestmark = pytest.mark.e2e

API_KEY = "e2e-trace-key-0123456789"
SECRET = "e2e-trace-secret"  # noqa: S105 - a test fixture value
TOKEN = "e2e-collector-token"  # noqa: S105 - a test fixture value
PIPELINE = "traced"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    r = start_otlp_receiver()
    yield r
    r.stop()


def test_a_paging_event_is_one_trace_across_the_operator_run_workers(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods, receiver: ThreadedReceiver,
    kafka_bootstrap: str, redis_url: str, otlp: OtlpReceiver,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rec = receiver.receiver
    body = tenant_pipeline(api, namespace, receiver, pod_runner, kafka_bootstrap, redis_url, PIPELINE,
                           API_KEY,
                           SECRET, ("otel", "headers", f"authorization=Bearer%20{TOKEN}"))
    tracing = {"endpoint": otlp.url, "sampleRatio": 1.0,
               "headersSecretRef": {"name": "otel", "key": "headers"}}
    body["spec"].update({"allowedLateness": "1s", "tracing": tracing})
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", body)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules", demo_rule(PIPELINE))

    def ready() -> bool:
        c = condition(co, namespace, PIPELINE, "Ready")
        return c is not None and c["status"] == "True"

    try:
        wait_for(ready, "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    cm = core.read_namespaced_config_map(f"{PIPELINE}-config", namespace)
    assert orjson.loads(cm.data["config.json"])["tracing"]["endpoint"] == otlp.url
    ingestor = f"{pod_address(core, namespace, PIPELINE, 'ingestor')}:8080"
    evaluator = f"{pod_address(core, namespace, PIPELINE, 'evaluator')}:9102"
    deliverer = f"{pod_address(core, namespace, PIPELINE, 'deliverer')}:9102"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
    wait_for(lambda: b"alertpipe_evaluator_rules 1.0" in http("GET", f"http://{evaluator}/metrics")[1],
             "the evaluator with the rule", 60)
    wait_for(lambda: http("GET", f"http://{deliverer}/readyz")[0] == 200, "deliverer /readyz", 60)

    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    now = int(time.time() * 1000)

    def post(e: dict[str, object], tp: str) -> None:
        status, answer = http("POST", f"http://{ingestor}/v1/events", orjson.dumps([e]), {
            "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", "traceparent": tp})
        assert status == 202, answer

    post(event(namespace, "d1", 0, now, 95.0), f"00-{trace_id}-{client_span}-01")
    # not sampled by its client: no trace; it moves the watermark past the first (which waits for it)
    post(event(namespace, "d1", 1, now + 3000, 10.0), f"00-{secrets.token_hex(16)}-{client_span}-00")

    def firing() -> list[Any]:
        return [r for r in rec.recorder.accepted("/webhook/ops") if r.json["alert"]["status"] == "firing"]

    wait_for(lambda: len(firing()) == 1, "the page at the webhook", 90)
    wait_for(lambda: len({s.name for s in otlp.snapshot() if s.trace_id == trace_id}) == 3,
             "spans of the three stages in the client's trace", 60)
    spans = {s.name: s for s in otlp.snapshot() if s.trace_id == trace_id}
    ingest, evaluate = spans["alertpipe.ingest"], spans["alertpipe.evaluate"]
    deliver = spans["alertpipe.deliver"]
    assert ingest.parent_span_id == client_span
    assert evaluate.parent_span_id == ingest.span_id and deliver.parent_span_id == evaluate.span_id
    assert {s.resource["alertpipe.pipeline"] for s in spans.values()} == {PIPELINE}
    pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
    assert {s.resource["service.instance.id"] for s in spans.values()} <= pods  # POD_NAME
    [hit] = firing()
    assert hit.headers.get("traceparent") == f"00-{trace_id}-{deliver.span_id}-01"
    assert {h.get("authorization") for h in otlp.requests} == {f"Bearer {TOKEN}"}  # from the Secret, mounted
