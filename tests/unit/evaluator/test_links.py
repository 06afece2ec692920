"""LinkHealth: a partition counts as in touch only while librdkafka's statistics show its leader
answering (rxidle under 3 s) and the statistics themselves are recent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from alertpipe.workers.evaluator.links import LinkHealth

pytestmark = pytest.mark.unit

TOPIC = "t.p.events"


def stats(rxidle_us: dict[int, int], leaders: dict[int, int], topic: str = TOPIC) -> bytes:
    brokers: dict[str, Any] = {
        f"127.0.0.1:{9000 + n}/{n}": {"nodeid": n, "state": "UP", "rxidle": idle}
        for n, idle in rxidle_us.items()
    }
    brokers["GroupCoordinator"] = {"nodeid": -1, "rxidle": 10}
    parts = {str(p): {"partition": p, "leader": leader} for p, leader in leaders.items()}
    parts["-1"] = {"partition": -1, "leader": -1}
    return orjson.dumps({"brokers": brokers, "topics": {topic: {"partitions": parts}}})


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_without_statistics_every_partition_is_in_touch() -> None:
    assert LinkHealth(TOPIC).in_touch(0) and LinkHealth(TOPIC).out_of_touch() == 0


def test_a_silent_leader_puts_its_partitions_out_of_touch() -> None:
    clock = Clock()
    h = LinkHealth(TOPIC, clock=clock)
    h.on_stats(stats({1: 200_000, 2: 4_000_000, 3: -1}, {0: 1, 1: 2, 2: 3, 3: 1}))
    assert [h.in_touch(p) for p in range(5)] == [True, False, False, True, False]  # 4: not listed
    assert h.out_of_touch() == 2
    h.on_stats(stats({1: 200_000, 2: 300_000, 3: 100}, {0: 1, 1: 2, 2: 3, 3: 1}))  # healed
    assert all(h.in_touch(p) for p in range(4)) and h.out_of_touch() == 0


def test_old_statistics_say_nothing_is_in_touch() -> None:
    clock = Clock()
    h = LinkHealth(TOPIC, clock=clock)
    h.on_stats(stats({1: 1000}, {0: 1}))
    clock.t += 2.9
    assert h.in_touch(0)
    clock.t += 0.2
    assert not h.in_touch(0)


def test_another_topic_and_a_leaderless_partition() -> None:
    h = LinkHealth(TOPIC)
    h.on_stats(stats({1: 1000}, {0: 1, 1: -1}))
    assert h.in_touch(0) and not h.in_touch(1)
    h.on_stats(stats({1: 1000}, {0: 1}, topic="other"))
    assert not h.in_touch(0)
