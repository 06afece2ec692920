"""AlertConsumer over the in-memory consumer: gating keeps a topic's messages in Kafka, commits go
up to the lowest offset in flight, a revoke commits the frontier and forgets the partition."""

from __future__ import annotations

import asyncio

import pytest

from alertpipe.workers.deliverer.consumer import AlertConsumer
from tests.unit.deliverer.memory import Broker, MemoryConsumer

pytestmark = pytest.mark.unit


async def _consumer(broker: Broker, topics: list[str]) -> tuple[AlertConsumer, MemoryConsumer]:
    kafka = MemoryConsumer(broker, "g")
    c = AlertConsumer(kafka, batch_size=100)
    await c.subscribe(topics)
    assert await c.poll(frozenset()) == []  # the assignment arrives in the first poll (nothing yet)
    assert c.assigned
    return c, kafka


async def test_a_gated_topic_is_read_later_and_the_other_flows() -> None:
    broker = Broker(partitions=1)
    c, _ = await _consumer(broker, ["alerts", "retry"])
    for i in range(3):
        broker.produce("alerts", b"k", b"a%d" % i)
        broker.produce("retry", b"k", b"r%d" % i)
    got = []
    for _ in range(5):
        got += await c.poll(frozenset({"retry"}))
    assert [m.value() for m in got] == [b"a0", b"a1", b"a2"]
    rest = []
    for _ in range(5):
        rest += await c.poll(frozenset())
    assert [m.value() for m in rest] == [b"r0", b"r1", b"r2"]  # nothing of the gated topic was lost
    await c.close()


async def test_commit_goes_up_to_the_lowest_offset_in_flight_and_revoke_commits_it() -> None:
    broker = Broker(partitions=1)
    c, kafka = await _consumer(broker, ["alerts"])
    for i in range(4):
        broker.produce("alerts", b"k", b"%d" % i)
    msgs = []
    for _ in range(3):
        msgs += await c.poll(frozenset())
    tr = c.tracker(("alerts", 0))
    assert tr is not None and len(msgs) == 4
    for m in msgs:
        c.add(tr, m.offset(), 1)
    for off in (0, 2, 3):  # offset 1 is still in flight
        c.done(("alerts", 0), off)
    stop = asyncio.Event()
    loop = asyncio.create_task(c.commit_loop(stop, 0.01))
    await asyncio.sleep(0.1)
    assert broker.group_committed("g", "alerts") == {0: 1}
    c.done(("alerts", 0), 1)
    await asyncio.sleep(0.1)
    assert broker.group_committed("g", "alerts") == {0: 4}
    stop.set()
    await loop
    c.add(tr, 4, 0)  # a message with no delivery: terminal at once, committed by the revoke
    kafka.revoke_all()
    assert broker.group_committed("g", "alerts") == {0: 5}
    assert c.tracker(("alerts", 0)) is None and not c.owns(("alerts", 0), tr)
    c.done(("alerts", 0), 3)  # a late ack for a revoked partition is ignored
    await c.close()
    assert kafka.closed and broker.group_committed("g", "alerts") == {0: 5}
