"""Canary rollouts on the devstack: a pipeline with a rollout, traffic, and the control run (the e2e
test and bench/canary share it).

``EventLoad`` POSTs events of many devices to the ingestor from a thread, in a fixed value cycle
(95, 96, 97, 10, 11, 12: a threshold ``value > 80`` fires and resolves once per cycle), with event
time = wall time. ``expected`` is the single-track control run: the transitions that rule must
produce for exactly the events that were accepted, per device — what one evaluator with the whole
stream and no rollout produces (alert ids are deterministic: rule, device, episode start).
``alerts_on`` reads every alert transition on a topic. ``start`` applies a pipeline (ingestor and
evaluator as local pods, no deliverer: the alerts topic is what is checked) and its one rule.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from kubernetes import client

from alertpipe.workers.alerts import alert_id
from devstack.pipeline import GROUP, VERSION, condition, http, pod_address, post_events, wait_for

__all__ = [
    "CYCLE",
    "RULE",
    "EventLoad",
    "Setup",
    "alerts_on",
    "expected",
    "per_device",
    "replace_rule",
    "rule",
    "settle",
    "start",
]

RULE = "cpu-hot"

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


def pipeline(name: str, bootstrap: str, redis_url: str, node_selector: dict[str, str],
             rollout: dict[str, Any]) -> Json:
    placed = {"nodeSelector": node_selector}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AlertPipeline", "metadata": {"name": name},
        "spec": {
            "kafka": {"bootstrapServers": bootstrap,
                      "topics": {"events": {"partitions": 2}, "alerts": {"partitions": 1}}},
            "redis": {"url": redis_url}, "allowedLateness": "1s", "idleTimeout": "2s",
            "ingestor": placed, "evaluator": placed, "deliverer": {"enabled": False},
            "ingest": {"apiKeysSecretRef": {"name": "ingest-keys", "key": "keys"}},
            "ruleSelector": {"matchLabels": {"alertpipe.io/pipeline": name}},
            "rollout": rollout,
        },
    }


def rule(pipeline_name: str, condition_text: str, summary: str) -> Json:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AlertRule",
        "metadata": {"name": RULE, "labels": {"alertpipe.io/pipeline": pipeline_name}},
        "spec": {"select": {"types": ["cpu"]}, "threshold": {"condition": condition_text},
                 "annotations": {"summary": summary}},
    }


class Setup:
    """One pipeline of a test namespace: its status.canary (phases seen) and config documents."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.core, self.co = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.ns, self.name = namespace, name
        self.phases: list[tuple[str, int]] = []

    def canary(self) -> Json:
        obj: Any = self.co.get_namespaced_custom_object(GROUP, VERSION, self.ns, "alertpipelines", self.name)
        return dict(obj.get("status", {}).get("canary") or {})

    def watch_phase(self) -> Json:
        c = self.canary()
        if c and (not self.phases or self.phases[-1] != (c["phase"], c["weight"])):
            self.phases.append((c["phase"], c["weight"]))
        return c

    def config(self, suffix: str = "") -> Json:
        cm: Any = self.core.read_namespaced_config_map(f"{self.name}-config{suffix}", self.ns)
        return dict(json.loads(cm.data["config.json"]))


def start(
    api: client.ApiClient, namespace: str, bootstrap: str, redis_url: str, node_selector: dict[str, str],
    operator_log: Path, api_key: str, rollout: Json,
) -> tuple[Setup, str]:
    """Apply pipeline ``edge`` with ``rollout`` and rule v1 (``value > 80``); wait until its ingestor
    answers and its evaluator holds both partitions. (Setup, ingestor host:port)."""
    s = Setup(api, namespace, "edge")
    s.core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="ingest-keys"), string_data={"keys": f"{namespace}:{api_key}\n"}))
    # the rule first: a pipeline compiled before its rule is seen would roll the rule out as a change
    s.co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules",
                                         rule("edge", "value > 80", "v1 {{ value }}"))
    s.co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines",
                                         pipeline("edge", bootstrap, redis_url, node_selector, rollout))

    def ready() -> bool:
        c = condition(s.co, namespace, "edge", "Ready")
        return c is not None and c["status"] == "True"

    try:
        wait_for(ready, "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator_log.read_text()[-3000:]) from None
    ingestor = f"{pod_address(s.core, namespace, 'edge', 'ingestor')}:8080"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
    evaluator = f"{pod_address(s.core, namespace, 'edge', 'evaluator')}:9102"
    wait_for(lambda: b"alertpipe_evaluator_assigned_partitions 2.0" in http(
        "GET", f"http://{evaluator}/metrics")[1], "the stable evaluator holding both partitions", 120)
    if s.canary():
        raise AssertionError(f"a rollout runs before any change: {s.canary()}")
    return s, ingestor


def replace_rule(s: Setup, condition_text: str, summary: str) -> None:
    live: Any = s.co.get_namespaced_custom_object(GROUP, VERSION, s.ns, "alertrules", RULE)
    body = rule("edge", condition_text, summary)
    body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    s.co.replace_namespaced_custom_object(GROUP, VERSION, s.ns, "alertrules", RULE, body)


def settle(bootstrap: str, topic: str, want: int) -> list[Json]:
    """The alerts topic once it stops growing (and holds at least ``want`` records)."""
    last: list[Json] = []
    for _ in range(30):
        got = alerts_on(bootstrap, topic)
        if len(got) >= want and len(got) == len(last):
            return got
        last = got
        time.sleep(2)
    return last
