"""Fixtures of the ingestor's integration tests: a topic, a config, a running ingestor, a reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alertpipe.workers.config import PipelineConfig, StaticConfigSource
from alertpipe.workers.ingestor import Ingestor, IngestorSettings, KeyRing, KeySource

KEY = "acme-key-0123456789abcdef"
OTHER_TENANT_KEY = "globex-key-0123456789abcdef"
KEYS_TEXT = f"acme:{KEY}\nglobex:{OTHER_TENANT_KEY}\n"
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_config(bootstrap: str, topic: str, *, max_body: int = 1_048_576) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "tenant": "acme",
            "pipeline": "p1",
            "kafka": {
                "bootstrapServers": bootstrap,
                "topics": {"events": topic, "alerts": f"{topic}-a", "late": f"{topic}-l",
                           "deadLetter": f"{topic}-d", "audit": f"{topic}-u"},
            },
            "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "x:"},
            "ingest": {"maxBodyBytes": max_body},
        }
    ).with_revision()


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        fut.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        if name in md.topics and len(md.topics[name].partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} did not appear")


def read_topic(
    bootstrap: str, topic: str, expect: int, timeout: float = 60.0
) -> list[tuple[str, dict[str, Any], int]]:
    """Every record of ``topic`` as (key, value, partition); waits for at least ``expect`` then drains."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out: list[tuple[str, dict[str, Any], int]] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(1000, 0.5)
            for m in msgs:
                assert m.error() is None, m.error()
                key, value = m.key(), m.value()
                assert isinstance(key, bytes) and value is not None
                out.append((key.decode(), orjson.loads(value), int(m.partition() or 0)))
            if len(out) >= expect:
                # drain a little longer: more than expected must be seen too
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() > quiet_until:
                    break
    finally:
        c.close()
    return out


@dataclass
class Running:
    ingestor: Ingestor
    url: str
    session: aiohttp.ClientSession

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        data = orjson.dumps(body) if isinstance(body, list) else body
        hdrs = {**AUTH, "Content-Type": "application/json"} if headers is None else headers
        async with self.session.post(self.url + "/v1/events", data=data, headers=hdrs) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else {}), r.headers

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.session.get(self.url + path) as r:
            return r.status, await r.read()

    async def wait_ready(self, ready: bool = True, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = await self.get("/readyz")
            if (status == 200) == ready:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"/readyz did not become {'ready' if ready else 'not ready'} in {timeout}s")


@asynccontextmanager
async def running_ingestor(config: PipelineConfig, settings: IngestorSettings | None = None,
                           keys: str = KEYS_TEXT, wait_ready: bool = True) -> AsyncIterator[Running]:
    ing = Ingestor(StaticConfigSource(config), KeySource.static(KeyRing.from_text(keys)),
                   settings or IngestorSettings(delivery_timeout=10.0, health_interval=0.25))
    server = TestServer(ing.app(), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        run = Running(ing, f"http://127.0.0.1:{server.port}", session)
        try:
            if wait_ready:
                await run.wait_ready()
            yield run
        finally:
            await server.close()


def events(n: int, start: int = 0, tenant: str = "acme", devices: int = 10) -> list[dict[str, Any]]:
    return [{"tenant": tenant, "deviceId": f"dev-{i % devices}", "seq": i, "ts": 1_767_323_000_000 + i,
             "type": "temperature", "value": i * 0.5} for i in range(start, start + n)]


@pytest.fixture
def topic(kafka_bootstrap: str, unique: str) -> str:
    create_topic(kafka_bootstrap, unique)
    return unique


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    p = tmp_path / "keys"
    p.write_text(KEYS_TEXT)
    return p


@pytest.fixture
def config_file(tmp_path: Path, kafka_bootstrap: str, topic: str) -> Iterator[Callable[..., Path]]:
    def write(**kw: Any) -> Path:
        p = tmp_path / "config.json"
        p.write_bytes(make_config(kafka_bootstrap, topic, **kw).to_json())
        return p
    yield write
