"""spec.tracing on the real stages: the ingestor (HTTP), the evaluator and the deliverer run on the
devstack's Kafka and Redis and export to a local OTLP/HTTP receiver. One event that fires a rule is
one trace: the client's span → ``alertpipe.ingest`` → ``alertpipe.evaluate`` → ``alertpipe.deliver``,
each the parent of the next, and the webhook request carries the delivery span's ``traceparent``.
A request whose client context is not sampled leaves no span and no header anywhere."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from alertpipe.workers.config import PipelineConfig, SecretKeyRef, StaticConfigSource
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.worker import Deliverer
from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions
from alertpipe.workers.ingestor import Ingestor, IngestorSettings, KeyRing, KeySource
from alertpipe.workers.secrets import SecretResolver
from tests.receivers import HttpReceiver, start_http_receiver, wait_until
from tests.receivers.otlp import OtlpReceiver, ReceivedSpan, start_otlp_receiver

pytestmark = pytest.mark.integration

KEY = "acme-trace-key-0123456789"
WEBHOOK_SECRET = "whsec-trace-0123456789"  # noqa: S105 - a test fixture value
COLLECTOR_TOKEN = "t0ken-for-the-collector"  # noqa: S105 - a test fixture value
T0 = 1_767_323_000_000


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    r = start_otlp_receiver()
    yield r
    r.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[HttpReceiver]:
    r = await start_http_receiver()
    r.secrets["/webhook/"] = WEBHOOK_SECRET.encode()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    for name, key, value in (("hooks", "signing", WEBHOOK_SECRET),
                             ("otlp", "headers", f"authorization=Bearer%20{COLLECTOR_TOKEN}")):
        (d / name).mkdir(parents=True, exist_ok=True)
        (d / name / key).write_text(value + "\n")
    return d


def pipeline_config(kafka: str, redis_url: str, name: str, hook: str, collector: str) -> PipelineConfig:
    topics = {"events": f"{name}.events", "alerts": f"{name}.alerts", "late": f"{name}.late",
              "deadLetter": f"{name}.dlq", "audit": f"{name}.audit", "retry": f"{name}.retry"}
    admin = AdminClient({"bootstrap.servers": kafka})
    for fut in admin.create_topics([NewTopic(t, 3 if k in ("events", "alerts") else 1, 1)
                                    for k, t in topics.items()]).values():
        fut.result(timeout=30)
    return PipelineConfig.model_validate({
        "tenant": "acme",
        "pipeline": "p" + name[-8:],
        "kafka": {"bootstrapServers": kafka, "topics": topics},
        "redis": {"url": redis_url, "keyPrefix": f"ap:{name}:"},
        "allowedLateness": "1s",
        "idleTimeout": "1h",
        "delivery": {"allowedNetworks": ["127.0.0.0/8"]},
        "channels": [{"name": "ops", "webhook": {"url": hook, "signingSecretRef": {"name": "hooks",
                                                                                      "key": "signing"}}}],
        "rules": [{"name": "temp-hot", "spec": {"threshold": {"condition": "value > 80"},
                                                "channels": ["ops"]}}],
        "tracing": {"endpoint": collector, "sampleRatio": 1.0,
                    "headersSecretRef": {"name": "otlp", "key": "headers"}},
    }).with_revision()


def traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def of_trace(spans: list[ReceivedSpan], trace_id: str) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans if s.trace_id == trace_id}


async def test_one_trace_spans_ingest_evaluate_deliver_with_parent_links(
    kafka_bootstrap: str, redis_url: str, unique: str, secrets_dir: Path, otlp: OtlpReceiver,
    webhook: HttpReceiver,
) -> None:
    cfg = pipeline_config(kafka_bootstrap, redis_url, unique, webhook.url("/webhook/ops"), otlp.url)
    resolver = SecretResolver(secrets_dir)

    def secret(ref: SecretKeyRef) -> str:
        return resolver.resolve(ref).get_secret_value()

    keys = KeySource.static(KeyRing.from_text(f"acme:{KEY}\n"))
    keys.resolver = resolver
    ingestor = Ingestor(StaticConfigSource(cfg), keys, IngestorSettings(health_interval=0.25))
    evaluator = Evaluator(StaticConfigSource(cfg), secrets=resolver,
                          options=EvaluatorOptions(group_id=f"{unique}-evaluator", checkpoint_interval=0.5))
    deliverer = Deliverer(StaticConfigSource(cfg), secret, DelivererSettings(claim_ttl=5.0))
    stop_eval, stop_deliver = threading.Event(), asyncio.Event()
    eval_thread = threading.Thread(target=evaluator.run, args=(stop_eval,), name="evaluator", daemon=True)
    eval_thread.start()
    delivering = asyncio.create_task(deliverer.run(stop_deliver))
    server = TestServer(ingestor.app(), host="127.0.0.1")
    await server.start_server()
    traced, untraced = secrets.token_hex(16), secrets.token_hex(16)
    client_span = secrets.token_hex(8)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}"

            async def post(events: list[dict[str, Any]], tp: str) -> int:
                headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                           "traceparent": tp}
                async with http.post(url + "/v1/events", data=orjson.dumps(events), headers=headers) as r:
                    return r.status

            async def ready() -> bool:
                async with http.get(url + "/readyz") as r:
                    return r.status == 200

            deadline = time.monotonic() + 60
            while not await ready():
                assert time.monotonic() < deadline, "the ingestor did not become ready"
                await asyncio.sleep(0.1)
            event = {"tenant": "acme", "deviceId": "d1", "type": "temperature"}
            # d1 fires on seq 0 (the client's sampled trace); seq 1, not sampled by its client, moves
            # the watermark past it (the first event of a device waits for that) and resolves it
            assert await post([{**event, "seq": 0, "ts": T0, "value": 95.0}],
                              traceparent(traced, client_span, True)) == 202
            assert await post([{**event, "seq": 1, "ts": T0 + 3000, "value": 20.0}],
                              traceparent(untraced, secrets.token_hex(8), False)) == 202

            def firing() -> list[Any]:
                return [r for r in webhook.recorder.accepted("/webhook/ops")
                        if r.json["alert"]["status"] == "firing"]

            await wait_until(lambda: len(firing()) == 1, 90, "the firing alert at the webhook")
            await asyncio.to_thread(otlp.wait_for, lambda spans: len(of_trace(spans, traced)) == 3,
                                    "a span of each stage in the client's trace", 60)
            await asyncio.sleep(2.5)  # past one export interval: a stray span would be here now
    finally:
        await server.close()
        stop_deliver.set()
        await asyncio.wait_for(delivering, 60)
        stop_eval.set()
        await asyncio.to_thread(eval_thread.join, 60)

    spans = otlp.snapshot()
    trace = of_trace(spans, traced)
    assert set(trace) == {"alertpipe.ingest", "alertpipe.evaluate", "alertpipe.deliver"}, spans
    ingest, evaluate = trace["alertpipe.ingest"], trace["alertpipe.evaluate"]
    deliver = trace["alertpipe.deliver"]
    # one stage after the other, each the child of the one before; the first under the client's span
    assert ingest.parent_span_id == client_span
    assert evaluate.parent_span_id == ingest.span_id
    assert deliver.parent_span_id == evaluate.span_id
    assert (ingest.service, evaluate.service, deliver.service) == (
        "alertpipe-ingestor", "alertpipe-evaluator", "alertpipe-deliverer")
    assert ingest.resource["alertpipe.pipeline"] == cfg.pipeline
    assert ingest.attributes["http.response.status_code"] == 202
    assert ingest.attributes["alertpipe.events.accepted"] == 1
    assert evaluate.attributes["alertpipe.rule"] == "temp-hot"
    assert evaluate.attributes["alertpipe.alert.status"] == "firing"
    assert evaluate.start_ns >= ingest.start_ns and deliver.start_ns >= evaluate.start_ns
    assert deliver.attributes["alertpipe.channel"] == "ops"
    assert deliver.attributes["alertpipe.delivery.outcome"] == "delivered"
    attempts = [(name, a["alertpipe.delivery.attempt"], a["alertpipe.delivery.outcome"],
                 a["http.response.status_code"]) for name, a in deliver.events]
    assert attempts == [("attempt", 1, "delivered", 200)]

    # the tenant's receiver can join the trace: the webhook request names the delivery span
    [hit] = firing()
    assert hit.headers.get("traceparent") == traceparent(traced, deliver.span_id, True)
    # the resolve came from the unsampled request: nothing of it anywhere
    got = webhook.recorder.accepted("/webhook/ops")
    resolved = [r for r in got if r.json["alert"]["status"] == "resolved"]
    assert all("traceparent" not in r.headers for r in resolved)
    assert not [s for s in spans if s.trace_id == untraced]
    assert {s.trace_id for s in spans} == {traced}
    # the collector's credentials came from the Secret
    assert otlp.requests and all(h.get("authorization") == f"Bearer {COLLECTOR_TOKEN}" for h in otlp.requests)
