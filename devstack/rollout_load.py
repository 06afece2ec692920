"""Traffic for canary rollouts on the devstack (the e2e test and bench/canary share it).

``EventLoad`` POSTs events of many devices to the ingestor from a thread, in a fixed value cycle
(95, 96, 97, 10, 11, 12: a threshold ``value > 80`` fires and resolves once per cycle), with event
time = wall time. ``expected`` is the single-track control run: the transitions that rule must
produce for exactly the events that were accepted, per device — what one evaluator with the whole
stream and no rollout produces (alert ids are deterministic: rule, device, episode start).
``alerts_on`` reads every alert transition on a topic.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from alertpipe.workers.alerts import alert_id
from devstack.pipeline import post_events

__all__ = ["CYCLE", "EventLoad", "alerts_on", "expected", "per_device"]

CYCLE = (95, 96, 97, 10, 11, 12)
Json = dict[str, Any]


class EventLoad:
    """``devices`` devices, one event each every ``every`` seconds, until ``stop``."""

    def __init__(
        self, ingestor: str, api_key: str, tenant: str, devices: int = 40, every: float = 0.2
    ) -> None:
        self.ingestor, self.api_key, self.tenant = ingestor, api_key, tenant
        self.devices = [f"dev-{i:03d}" for i in range(devices)]
        self.every = every
        self.sent: list[Json] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-load", daemon=True)

    def start(self) -> EventLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            ts = int(time.time() * 1000)
            batch = [{"tenant": self.tenant, "deviceId": d, "seq": seq, "ts": ts, "type": "cpu",
                      "value": CYCLE[(seq + i) % len(CYCLE)]} for i, d in enumerate(self.devices)]
            answer = post_events(self.ingestor, self.api_key, batch)
            if answer.get("accepted") != len(batch):
                raise AssertionError(f"ingestor did not accept every event: {answer}")
            self.sent.extend(batch)
            self.rounds += 1
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def expected(
    events: list[Json], tenant: str, pipeline: str, rule: str, threshold: float = 80
) -> Counter[Any]:
    """(device, alert id, status) of a ``value > threshold`` rule over ``events`` (single track)."""
    out: Counter[Any] = Counter()
    firing: dict[str, int] = {}
    for e in sorted(events, key=lambda e: (e["deviceId"], e["seq"])):
        dev, ts = e["deviceId"], e["ts"]
        if e["value"] > threshold and dev not in firing:
            firing[dev] = ts
            out[(dev, alert_id(tenant, pipeline, rule, f"deviceId={dev}", ts), "firing")] += 1
        elif e["value"] <= threshold and dev in firing:
            start = firing.pop(dev)
            out[(dev, alert_id(tenant, pipeline, rule, f"deviceId={dev}", start), "resolved")] += 1
    return out


def per_device(alerts: list[Json]) -> Counter[Any]:
    """(device, alert id, status) counts of alerts read from a topic (doubles count twice)."""
    return Counter((a["labels"].get("deviceId"), a["id"], a["status"]) for a in alerts)


def alerts_on(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Json]:
    """Every record on ``topic`` (all partitions, start to current end), decoded."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rollout-load-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    out: list[Json] = []
    try:
        meta = c.list_topics(topic, timeout=timeout).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                part, off, value = m.partition(), m.offset(), m.value()
                if m.error() is not None or part is None or off is None or value is None:
                    continue
                if off + 1 >= ends.get(part, 0):
                    ends.pop(part, None)
                out.append(orjson.loads(value))
    finally:
        c.close()
    return out
