"""Bad input through a real ingestor on a real Kafka: each kind gets a 4xx whose reason says what to
fix (the whole request when the body is not JSON, the one event otherwise), and only the good events
reach the topic."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from .conftest import AUTH, events, make_config, read_topic, running_ingestor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

JSON = {**AUTH, "Content-Type": "application/json"}


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_bad_bodies_get_400_with_the_reason(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        good = orjson.dumps(events(1)[0])
        cases: list[tuple[bytes, str]] = [
            (b'[{"tenant": "acme", "deviceId": }]', "malformed JSON at line 1 column"),
            (b'[{"tenant": "acme", "value": NaN}]', "NaN and Infinity are not JSON"),
            (b'[{"tenant": "acme", "value": Infinity}]', "NaN and Infinity are not JSON"),
            (b'[{"tenant": "acme", "value": 1e999}]', "NaN and Infinity are not JSON"),
            (b'[{"tenant": "acme", "deviceId": "\xc3\x28"}]', "must be UTF-8"),
            (b'[{"tenant": "acme", "deviceId": "\\udc00"}]', "surrogate"),
            (b"[" + good + b", {\"v\": " + _deep(5000) + b"}]", "more than 1024 levels of nesting"),
            (b"", "empty body"),
        ]
        for body, reason in cases:
            status, resp, _ = await ing.post(body, JSON)
            assert status == 400 and reason in resp["error"], (body[:60], resp)
            assert "\n" not in resp["error"]


async def test_bad_events_are_rejected_alone_with_the_reason(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        now = time.time_ns() // 1_000_000
        ok = {"tenant": "acme", "deviceId": "dev-1", "seq": 1, "ts": now, "type": "temperature", "value": 1.5}
        nested: Any = 1
        for _ in range(300):
            nested = [nested]
        batch: list[tuple[dict[str, Any], str]] = [
            ({k: v for k, v in ok.items() if k != "deviceId"}, "deviceId is required"),
            ({k: v for k, v in ok.items() if k != "seq"}, "seq is required"),
            (ok | {"seq": "7"}, "seq is required: a non-negative integer"),
            (ok | {"deviceId": 42}, "deviceId is required: a string"),
            (ok | {"ts": True}, "not a boolean"),
            (ok | {"ts": "tomorrow"}, "is not RFC 3339"),
            (ok | {"deviceId": "d" * 300}, "1..256 characters"),
            (ok | {"type": "t" * 200}, "1..128 characters"),
            (ok | {"blob": "x" * 600_000}, "over the limit of 524288 (ingest.maxEventBytes)"),
            (ok | {"v": nested}, "nested more than 254 levels"),
            (ok | {"ts": now + 86_400_000}, "ahead of the ingestor's clock"),
            (ok | {"ts": "2999-01-01T00:00:00Z"}, "between 2000 and 2200"),
            (ok | {"ts": 86_400_000}, "between 2000 and 2200"),  # seconds or a day after 1970: a unit mistake
            (ok | {"ts": "1999-12-31T23:59:59Z"}, "between 2000 and 2200"),
            (ok | {"tenant": "globex"}, "does not belong to this pipeline"),
        ]
        body = [ok] + [e for e, _ in batch] + [ok | {"seq": 2, "ts": now + 60_000}]  # 1 min ahead: fine
        status, resp, _ = await ing.post(json.dumps(body).encode(), JSON)  # orjson stops at 255 levels
        assert status == 202 and resp["accepted"] == 2, resp
        reasons = {r["index"]: r["reason"] for r in resp["rejected"]}
        for i, (_, reason) in enumerate(batch, start=1):
            assert reason in reasons[i], (i, reasons.get(i))
            assert "\n" not in reasons[i]
        # the same events as NDJSON name their lines
        nd = b"\n".join(orjson.dumps(e) for e in body[:3])
        status, resp, _ = await ing.post(nd, {**AUTH, "Content-Type": "application/x-ndjson"})
        assert status == 202 and [(r["index"], r["line"]) for r in resp["rejected"]] == [(1, 2), (2, 3)]
    records = read_topic(kafka_bootstrap, topic, expect=3)
    assert sorted(v["seq"] for _, v, _ in records) == [1, 1, 2]


async def test_ten_megabyte_bodies_get_413(kafka_bootstrap: str, topic: str) -> None:
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        big = b"[" + b",".join([orjson.dumps(events(1)[0])] * 110_000) + b"]"
        assert len(big) > 10_000_000
        status, resp, hdrs = await ing.post(big, JSON)  # Content-Length: refused before reading
        assert status == 413 and "over the limit of 1048576 bytes: send smaller batches" in resp["error"]
        assert hdrs["Connection"] == "close"

        async def chunks() -> AsyncIterator[bytes]:  # chunked: refused once 1 MiB has been read
            for i in range(0, len(big), 65536):
                yield big[i:i + 65536]

        status, resp, _ = await ing.post(chunks(), JSON)
        assert status == 413 and "the body is over the limit" in resp["error"]
        status, resp, _ = await ing.post(events(2))  # and the ingestor serves on
        assert status == 202 and resp["accepted"] == 2
