"""The generator's HTTP sender against a real server that answers slowly: it keeps its schedule
(open loop, no coordinated omission), batches, and records every request in the ledger."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web

from alertpipe.generate import Knobs, Plan, Scenario, parse_schedule, run_http

pytestmark = pytest.mark.integration


async def test_a_slow_server_does_not_slow_the_schedule() -> None:
    got: list[int] = []

    async def events(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        got.append(len(body))
        await asyncio.sleep(0.3)  # a slow system: each answer takes 300 ms
        bad = sum(1 for e in body if "seq" not in e or not isinstance(e.get("ts"), int) or e["seq"] < 0)
        return web.json_response({"accepted": len(body) - bad}, status=202)

    app = web.Application()
    app.router.add_post("/v1/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        scenario = Scenario("acme", "main", parse_schedule("steady:400"), 3.0, devices=20,
                            knobs=Knobs(malformed=0.01))
        plan = Plan(scenario, start_ms=int((time.time() + 0.1) * 1000))
        t0 = time.monotonic()
        ledger = await run_http(plan, f"http://127.0.0.1:{port}/v1/events", "k", batch=50, linger_ms=10)
        took = time.monotonic() - t0
    finally:
        await runner.cleanup()
    assert sum(got) == plan.counts["event"] + plan.counts["malformed"] == sum(
        r.events for r in ledger.requests) + plan.counts["malformed"]
    assert max(got) <= 50
    # closed loop would need ~ requests x 0.3 s / 64 connections; open loop ends on schedule + one answer
    assert took < 3.0 + 0.1 + 1.5
    late = sorted(ledger.lateness_ms())
    # a send that waited for any answer would be >= 300 ms late; below that is the machine's noise
    # (p99 ~10 ms on a quiet one, >100 ms at load 12 on 2 cores)
    assert late[int(len(late) * 0.99)] < 250, "the sender fell behind its schedule"
    ack = [r.answered_ms - r.sent_ms for r in ledger.requests]
    assert min(ack) >= 290  # the server's slowness is in the ledger, not hidden
    assert ledger.complete()
