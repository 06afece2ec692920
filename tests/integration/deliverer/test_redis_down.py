"""Redis down: deliveries wait (no send without a claim, nothing committed), then resume; AOF keeps marks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.integration.deliverer.conftest import Pipeline, make_alert, running_deliverer, webhook
from tests.receivers import HttpReceiver, wait_until

pytestmark = pytest.mark.integration


async def test_redis_crash_holds_deliveries_and_keeps_delivered_marks(
    kafka_bootstrap: str, redis_server, unique: str, secrets_dir: Path, tmp_path: Path, receiver: HttpReceiver
) -> None:
    pipeline = Pipeline(kafka_bootstrap, redis_server.url, unique, secrets_dir, tmp_path / "pipeline.json")
    pipeline.update(channels=[webhook("hook", receiver.url("/webhook/hook"))])
    first = [make_alert(i, ["hook"]) for i in range(10)]
    later = [make_alert(100 + i, ["hook"]) for i in range(10)]
    rec = receiver.recorder
    async with running_deliverer(pipeline):
        pipeline.produce(first)
        await wait_until(lambda: len(rec.accepted_by_key) == 10, 30, "first 10 delivered")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 10, 30, "first 10 committed")
        await asyncio.to_thread(redis_server.stop, kill=True)
        try:
            pipeline.produce(later)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # no claim, no send: a generous window to prove it
                assert len(rec.items) == 10
                await asyncio.sleep(0.1)
            assert pipeline.committed(pipeline.group()) == 10
        finally:
            await asyncio.to_thread(redis_server.start)
        await wait_until(
            lambda: len(rec.accepted_by_key) == 20, 60, "the held 10 delivered after Redis is back"
        )
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 20, 30, "all committed")
    # a replay of everything (e.g. offsets reset) sends nothing again: the marks survived the crash (AOF)
    async with running_deliverer(pipeline, group_id=pipeline.group() + "-again"):
        await wait_until(
            lambda: sum(e.decision == "skipped_delivered" for e in pipeline.audit()) == 20, 60, "20 skipped"
        )
    assert rec.duplicates() == 0 and len(rec.items) == 20


async def test_redis_out_of_memory_holds_deliveries_until_it_has_room(
    kafka_bootstrap: str, redis_server, unique: str, secrets_dir: Path, tmp_path: Path, receiver: HttpReceiver
) -> None:
    """A Redis that refuses writes (OOM, noeviction) answers every claim with an error, not a
    dropped connection: the deliveries wait for it as for a Redis away, and none is lost."""
    import redis
    from prometheus_client import REGISTRY

    def lag() -> float | None:
        return REGISTRY.get_sample_value("alertpipe_deliverer_consumer_lag_messages", {"tenant": "acme"})

    pipeline = Pipeline(kafka_bootstrap, redis_server.url, unique, secrets_dir, tmp_path / "pipeline.json")
    pipeline.update(channels=[webhook("hook", receiver.url("/webhook/hook"))])
    rec = receiver.recorder
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    old = {str(k): str(v) for k, v in admin.config_get("maxmemory*").items()}
    async with running_deliverer(pipeline):
        pipeline.produce([make_alert(i, ["hook"]) for i in range(3)])
        await wait_until(lambda: len(rec.accepted_by_key) == 3, 30, "the first 3 delivered")
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        try:
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                admin.set(f"{unique}:probe", "x")  # the refusal the claims now get
            pipeline.produce([make_alert(100 + i, ["hook"]) for i in range(5)])
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:  # no claim, no send
                assert len(rec.items) == 3
                await asyncio.sleep(0.1)
            # the 5 held count as the deliverer's lag (read from the real consumer's watermarks)
            await wait_until(lambda: lag() == 5, 10, "the lag gauge at the 5 held")
        finally:
            admin.config_set("maxmemory", old["maxmemory"])
            admin.config_set("maxmemory-policy", old["maxmemory-policy"])
        await wait_until(lambda: len(rec.accepted_by_key) == 8, 30, "the held 5 sent once Redis has room")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 8, 30, "all committed")
        await wait_until(lambda: lag() == 0, 10, "no lag left")
    assert rec.duplicates() == 0 and len(rec.items) == 8
