"""The ingestor against a real Kafka: every answer code, and every event answered 202 is in the topic."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter
from collections.abc import AsyncIterator

import orjson
import pytest

from alertpipe.workers.ingestor import INGEST_TS_FIELD, IngestorSettings

from .conftest import AUTH, KEY, OTHER_TENANT_KEY, events, make_config, read_topic, running_ingestor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_every_event_answered_202_is_in_the_topic(kafka_bootstrap: str, topic: str) -> None:
    sent: list[dict[str, object]] = []
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        before = time.time_ns() // 1_000_000
        # 20 requests of 100, half as JSON arrays, half as NDJSON, 5 at a time
        batches = [events(100, start=i * 100) for i in range(20)]

        async def post(i: int) -> None:
            b = batches[i]
            if i % 2:
                body = b"\n".join(orjson.dumps(e) for e in b)
                status, resp, _ = await ing.post(body, {**AUTH, "Content-Type": "application/x-ndjson"})
            else:
                status, resp, _ = await ing.post(b)
            assert status == 202, resp
            assert resp == {"accepted": 100, "rejectedCount": 0, "rejected": []}
            sent.extend(b)

        for k in range(0, 20, 5):
            await asyncio.gather(*(post(i) for i in range(k, k + 5)))
        after = time.time_ns() // 1_000_000
        _, metrics = await ing.get("/metrics")
    records = read_topic(kafka_bootstrap, topic, expect=len(sent))
    assert len(records) == len(sent) == 2000
    seen = Counter((v["deviceId"], v["seq"]) for _, v, _ in records)
    assert set(seen) == {(e["deviceId"], e["seq"]) for e in sent} and max(seen.values()) == 1
    partitions: dict[str, set[int]] = {}
    for key, value, part in records:
        assert key == value["deviceId"]
        assert before <= value[INGEST_TS_FIELD] <= after
        assert value["type"] == "temperature" and value["tenant"] == "acme"
        partitions.setdefault(key, set()).add(part)
    assert all(len(p) == 1 for p in partitions.values()), "one device, one partition"
    text = metrics.decode()
    assert "alertpipe_ingestor_events_accepted_total 2000.0" in text
    assert 'alertpipe_ingestor_requests_total{code="202"} 20.0' in text
    assert "alertpipe_ingestor_produce_latency_seconds_count 20.0" in text
    assert "alertpipe_ingestor_batch_size_events_sum 2000.0" in text


async def test_auth_401_and_403(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        body = events(3)
        status, resp, hdrs = await ing.post(body, {"Content-Type": "application/json"})
        assert status == 401 and "Authorization: Bearer" in resp["error"]
        assert hdrs["WWW-Authenticate"].startswith("Bearer")
        status, resp, _ = await ing.post(body, {"Authorization": "Bearer not-a-known-key-at-all"})
        assert status == 401 and resp["error"] == "unknown API key"
        status, resp, _ = await ing.post(body, {"Authorization": f"Bearer {OTHER_TENANT_KEY}"})
        assert status == 403 and "acme/p1" in resp["error"]
        # a key that belongs to this tenant's other pipeline only
        async with running_ingestor(make_config(kafka_bootstrap, topic),
                                    keys=f"acme/p9:{KEY}\n") as ing2:
            status, _, _ = await ing2.post(body)
            assert status == 403
        _, metrics = await ing.get("/metrics")
        assert KEY not in metrics.decode() and OTHER_TENANT_KEY not in metrics.decode()
    assert read_topic(kafka_bootstrap, topic, expect=0, timeout=3) == []


async def test_413_by_content_length_and_while_streaming(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic, max_body=4096)) as ing:
        big = orjson.dumps(events(100))
        assert len(big) > 4096
        status, resp, _ = await ing.post(big)
        assert status == 413 and "4096" in resp["error"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
            for i in range(0, len(big), 1000):
                yield big[i:i + 1000]

        status, resp, _ = await ing.post(chunks(), {**AUTH, "Content-Type": "application/json"})
        assert status == 413
        # a small gzip body that inflates past the limit is caught after decompression
        bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
        status, _, _ = await ing.post(bomb, {**AUTH, "Content-Type": "application/json",
                                             "Content-Encoding": "gzip"})
        assert status == 413
        status, resp, _ = await ing.post(events(5))
        assert status == 202 and resp["accepted"] == 5


async def test_400_says_where_and_invalid_events_are_listed(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        status, resp, _ = await ing.post(b'[{"tenant": "acme",\n "seq": }]')
        assert status == 400 and "line 2 column" in resp["error"]
        nd = {**AUTH, "Content-Type": "application/x-ndjson"}
        status, resp, _ = await ing.post(b'{"a":1}\n{"b":\n', nd)
        assert status == 400 and "line 2" in resp["error"]
        status, resp, _ = await ing.post([{"tenant": "acme"}, {"nope": 1}])
        assert status == 400 and resp["accepted"] == 0 and resp["rejectedCount"] == 2
        good = events(3)
        mixed = [good[0], {**good[1], "tenant": "globex"}, good[2], {**good[0], "seq": "x"}]
        status, resp, _ = await ing.post(mixed)
        assert status == 202 and resp["accepted"] == 2
        assert [(r["index"], "tenant" in r["reason"]) for r in resp["rejected"]] == [(1, True), (3, False)]
    records = read_topic(kafka_bootstrap, topic, expect=2)
    assert sorted(v["seq"] for _, v, _ in records) == [0, 2]


async def test_429_when_too_many_events_await_acknowledgement(kafka_bootstrap: str, topic: str) -> None:
    # linger 1 s keeps the first request's events unacknowledged while the second one arrives
    settings = IngestorSettings(max_inflight=150, linger_ms=1000, health_interval=0.25)
    async with running_ingestor(make_config(kafka_bootstrap, topic), settings) as ing:
        first = asyncio.create_task(ing.post(events(100)))
        while ing.ingestor.producer is None or ing.ingestor.producer.inflight == 0:
            await asyncio.sleep(0.005)
        status, resp, hdrs = await ing.post(events(100, start=100))
        assert status == 429 and int(hdrs["Retry-After"]) >= 1 and "retry" in resp["error"]
        status1, resp1, _ = await first
        assert status1 == 202 and resp1["accepted"] == 100
        status, _, _ = await ing.post(events(100, start=100))
        assert status == 202
    records = read_topic(kafka_bootstrap, topic, expect=200)
    assert sorted(v["seq"] for _, v, _ in records) == list(range(200))


async def test_health_ready_metrics_openapi(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        assert (await ing.get("/healthz"))[0] == 200
        status, body = await ing.get("/readyz")
        assert status == 200 and orjson.loads(body)["ready"] is True
        status, body = await ing.get("/openapi.yaml")
        assert status == 200 and b"/v1/events" in body and b"openapi: 3.1" in body
        status, body = await ing.get("/metrics")
        assert b"alertpipe_ingestor_broker_up 1.0" in body
        assert b'alertpipe_ingestor_config_info{pipeline="p1",revision="' in body
    # a missing topic is not ready, with the reason
    async with running_ingestor(make_config(kafka_bootstrap, topic + "-missing"), wait_ready=False) as ing:
        deadline = time.monotonic() + 30
        while ing.ingestor.producer is None or not ing.ingestor.producer.wait_checked(0):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        status, body = await ing.get("/readyz")
        assert status == 503 and "does not exist" in orjson.loads(body)["reason"]
        status, resp, hdrs = await ing.post(events(1))
        assert status == 503 and "Retry-After" in hdrs and "does not exist" in resp["error"]
