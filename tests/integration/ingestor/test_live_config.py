"""The ingestor takes new config revisions and rotated key Secrets without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from alertpipe.workers.config import SecretKeyRef
from alertpipe.workers.config.loaders import FileConfigSource
from alertpipe.workers.ingestor import Ingestor, IngestorSettings, KeySource
from alertpipe.workers.secrets import SecretResolver

from .conftest import events, make_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_secret_rotation_and_config_revision(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    (secrets / "ingest-keys").mkdir(parents=True)
    keyfile = secrets / "ingest-keys" / "keys"
    keyfile.write_text("acme:old-key-0123456789abcdef\n")
    ref = SecretKeyRef(name="ingest-keys", key="keys")
    base = make_config(kafka_bootstrap, topic)
    cfg_path = tmp_path / "config.json"

    def write_config(max_body: int) -> None:
        cfg = base.model_copy(update={"ingest": base.ingest.model_copy(
            update={"api_keys_secret_ref": ref, "max_body_bytes": max_body})}).with_revision()
        tmp = cfg_path.with_suffix(".tmp")
        tmp.write_bytes(cfg.to_json())
        tmp.replace(cfg_path)

    write_config(1_048_576)
    settings = IngestorSettings(key_reload_interval=0.1, config_poll_interval=0.05, health_interval=0.25)
    ing = Ingestor(FileConfigSource(cfg_path, interval=0.05), KeySource(resolver=SecretResolver(secrets)),
                   settings)
    server = TestServer(ing.app(), host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    body = orjson.dumps(events(150))

    async def post(s: aiohttp.ClientSession, key: str) -> int:
        hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with s.post(url + "/v1/events", data=body, headers=hdrs) as r:
            return r.status

    async def until(cond: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = time.monotonic() + 30
        while not await cond():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    try:
        async with aiohttp.ClientSession() as s:
            async def ready() -> bool:
                async with s.get(url + "/readyz") as r:
                    return r.status == 200

            await until(ready, "ready")
            assert await post(s, "old-key-0123456789abcdef") == 202
            keyfile.write_text("acme:new-key-0123456789abcdef\n")

            async def rotated() -> bool:
                return await post(s, "new-key-0123456789abcdef") == 202

            await until(rotated, "rotated key accepted")
            assert await post(s, "old-key-0123456789abcdef") == 401
            # an invalid key list keeps the last good one
            keyfile.write_text("no separator on this line\n")
            async def invalid_seen() -> bool:
                return ing.keys.invalid_seen == 1

            await until(invalid_seen, "invalid key list read")
            assert await post(s, "new-key-0123456789abcdef") == 202
            # a smaller body limit in a new revision applies to the next request
            assert len(body) > 4096
            write_config(4096)

            async def limited() -> bool:
                return await post(s, "new-key-0123456789abcdef") == 413

            await until(limited, "new maxBodyBytes in force")
    finally:
        await server.close()
