"""Is the evaluator in touch with each partition's leader? Read from librdkafka's statistics.

The idleness rule (control.py) lets a quiet, caught-up partition's watermark follow the wall
clock. "Caught up" is judged on the high watermark of the last fetch response; when the link to
the partition's leader is cut (a partial partition: the broker is alive and still leader, the
evaluator just cannot reach it) that figure goes stale, the partition looks caught up and quiet,
and its watermark would pass the events waiting on the other side of the cut: they would come late
and their alerts be missed (measured: tests/chaos/test_partition.py). So a partition counts as
caught up only while its leader answers: librdkafka fetches from every leader at least every
``fetch.wait.max.ms`` (500 ms), so the broker's ``rxidle`` (time since it last sent us anything)
stays well under a second on a live link.

``LinkHealth.on_stats`` is the consumer's ``stats_cb`` (``statistics.interval.ms``); without
statistics (the in-memory clients of the unit tests) every partition counts as in touch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

__all__ = ["STATS_INTERVAL_MS", "LinkHealth"]

STATS_INTERVAL_MS = 1000
STALE_S = 3.0  # a leader silent this long is out of touch (six fetch waits)


class LinkHealth:
    def __init__(self, topic: str, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.stale_us = stale_s * 1e6
        self.clock = clock
        self._out: frozenset[int] = frozenset()  # partitions whose leader is silent or unknown
        self._known: frozenset[int] = frozenset()  # partitions the last statistics listed
        self._at: float | None = None

    def on_stats(self, raw: str | bytes) -> None:
        stats = orjson.loads(raw)
        silent_us = {
            b.get("nodeid"): b.get("rxidle", -1)
            for b in (stats.get("brokers") or {}).values()
            if isinstance(b, dict) and b.get("nodeid", -1) >= 0
        }
        parts = ((stats.get("topics") or {}).get(self.topic) or {}).get("partitions") or {}
        known, out = set(), set()
        for key, part in parts.items():
            p = int(key)
            if p < 0 or not isinstance(part, dict):
                continue  # -1: the topic's unassigned-messages pseudo partition
            known.add(p)
            idle_us = silent_us.get(part.get("leader", -1), -1)
            if idle_us < 0 or idle_us > self.stale_us:
                out.add(p)
        self._known, self._out, self._at = frozenset(known), frozenset(out), self.clock()

    def in_touch(self, partition: int) -> bool:
        """False while ``partition``'s leader is silent, unknown, or the statistics are old."""
        if self._at is None:
            return True  # no statistics configured
        if self.clock() - self._at > 3 * STATS_INTERVAL_MS / 1000:
            return False
        return partition in self._known and partition not in self._out

    def out_of_touch(self) -> int:
        return len(self._out)
