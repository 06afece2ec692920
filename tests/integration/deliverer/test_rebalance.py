"""Two deliverers in one consumer group: scale out and back in while alerts flow; nothing lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.integration.deliverer.conftest import Pipeline, make_alert, running_deliverer, webhook
from tests.receivers import HttpReceiver, wait_until

pytestmark = pytest.mark.integration


async def test_scale_out_and_in_while_alerts_flow(pipeline: Pipeline, receiver: HttpReceiver) -> None:
    pipeline.update(
        channels=[webhook("hook", receiver.url("/webhook/hook"), rateLimitPerSecond=2000, maxConcurrency=32)]
    )
    alerts = [make_alert(i, ["hook"]) for i in range(3000)]
    rec = receiver.recorder
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_deliverer(pipeline))
        pipeline.produce(alerts[:1000])
        await wait_until(lambda: len(rec.accepted_by_key) >= 300, 60, "first deliveries")
        # a second worker joins: partitions move (cooperative rebalance) while sends are in flight
        second = running_deliverer(pipeline)
        await second.__aenter__()
        pipeline.produce(alerts[1000:2000])
        await wait_until(lambda: len(rec.accepted_by_key) >= 1500, 60, "deliveries with two workers")
        # and leaves again (graceful stop: its partitions are committed up to the frontier and handed back)
        await second.__aexit__(None, None, None)
        await asyncio.to_thread(pipeline.produce, alerts[2000:])
        await wait_until(lambda: len(rec.accepted_by_key) == 3000, 120, "all 3000 delivered")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 3000, 60, "all committed")
    assert {a.delivery_key("hook") for a in alerts} == set(rec.accepted_by_key)
    assert rec.duplicates() == 0, f"{rec.duplicates()} duplicates after graceful rebalances"
