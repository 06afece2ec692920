"""The ingestor when Kafka goes away and comes back, and when the process is told to stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from alertpipe.workers.ingestor import IngestorSettings

from .conftest import AUTH, create_topic, events, make_config, read_topic, running_ingestor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
async def test_broker_down_503_nothing_accepted_lost_and_recovers(
    kafka_server: Any, unique: str, kill: bool
) -> None:
    bootstrap = kafka_server.bootstrap
    create_topic(bootstrap, unique)
    settings = IngestorSettings(delivery_timeout=6.0, health_interval=0.25, linger_ms=5)
    accepted: list[dict[str, Any]] = []
    statuses: list[int] = []
    retry_after: list[str] = []
    stop = asyncio.Event()

    async with running_ingestor(make_config(bootstrap, unique), settings) as ing:

        async def load() -> None:
            seq = 0
            while not stop.is_set():
                batch = events(50, start=seq)
                seq += 50
                status, resp, hdrs = await ing.post(batch)
                statuses.append(status)
                if status == 202:
                    accepted.extend(batch)
                else:
                    assert status == 503, f"unexpected {status} while the broker was down: {resp}"
                    retry_after.append(hdrs["Retry-After"])
                    await asyncio.sleep(0.05)

        task = asyncio.create_task(load())
        while len(accepted) < 500:
            await asyncio.sleep(0.02)
        await asyncio.get_running_loop().run_in_executor(None, lambda: kafka_server.stop(kill=kill))
        await ing.wait_ready(False, timeout=30)
        status, resp, hdrs = await ing.post(events(10, start=10**9))
        assert status == 503 and int(hdrs["Retry-After"]) > 0 and "Kafka" in resp["error"]
        accepted_while_down = len(accepted)
        await asyncio.get_running_loop().run_in_executor(None, kafka_server.start)
        await ing.wait_ready(True, timeout=60)
        deadline = time.monotonic() + 60
        while len(accepted) < accepted_while_down + 500:
            assert time.monotonic() < deadline, "no 202 after the broker came back"
            await asyncio.sleep(0.05)
        stop.set()
        await task
    # the load's own requests may all be 202: one produced just before the broker went away can be
    # acknowledged after it returns, within the delivery timeout. Every 503 carried Retry-After.
    assert all(int(r) > 0 for r in retry_after) and len(retry_after) == statuses.count(503)
    records = read_topic(bootstrap, unique, expect=len(accepted))
    in_topic = {(v["deviceId"], v["seq"]) for _, v, _ in records}
    missing = [e for e in accepted if (e["deviceId"], e["seq"]) not in in_topic]
    assert not missing, (
        f"{len(missing)} of {len(accepted)} events answered 202 are not in the topic"
        f" ({len(records)} records read; statuses {Counter(statuses)})"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_finishes_in_flight_requests_and_flushes(
    kafka_bootstrap: str, topic: str, tmp_path: Path, keys_file: Path
) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_bytes(make_config(kafka_bootstrap, topic).to_json())
    port = _free_port()
    log = (tmp_path / "ingestor.log").open("wb")
    # linger 2 s: the request below is still waiting for its acknowledgement when SIGTERM arrives
    proc = subprocess.Popen(
        [sys.executable, "-m", "alertpipe", "ingestor", "--config", f"file:{cfg}", "--host", "127.0.0.1",
         "--port", str(port), "--api-keys-file", str(keys_file), "--linger-ms", "2000"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 60
            while True:
                alive = time.monotonic() < deadline and proc.poll() is None
                assert alive, (tmp_path / "ingestor.log").read_text()
                try:
                    async with s.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)

            async def post() -> tuple[int, Any]:
                async with s.post(url + "/v1/events", data=orjson.dumps(events(100)),
                                  headers={**AUTH, "Content-Type": "application/json"}) as r:
                    return r.status, await r.json()

            req = asyncio.create_task(post())
            while True:  # wait until the events are produced and not yet acknowledged
                async with s.get(url + "/metrics") as r:
                    text = await r.text()
                if "alertpipe_ingestor_inflight_events 100.0" in text:
                    break
                assert not req.done(), "acknowledged before the test could stop the process"
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            status, body = await req
            assert status == 202 and body["accepted"] == 100
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "ingestor stopped" in (tmp_path / "ingestor.log").read_text()
    assert len(read_topic(kafka_bootstrap, topic, expect=100)) == 100
