"""Group keys that span devices, on real Kafka + Redis: `avg(value) over 1m by site > 60` over devices
spread across all 6 events partitions fires once per episode with the whole site's average (a
per-partition evaluation gets it wrong), also through kill -9 of the evaluator mid-stream."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.evaluator.worker import compile_rules, engine_settings
from alertpipe.workers.rules.engine import Engine

from .conftest import EvaluatorProcess, Pipeline, partition_of, wait_for

pytestmark = pytest.mark.integration

PARTS = 6
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a whole minute
RULE = {
    "name": "site-avg",
    "spec": {
        "select": {"types": ["cpu"]},
        "by": ["site"],
        "aggregate": {"fn": "avg", "field": "value", "window": "1m", "condition": "value > 60.0"},
        "annotations": {"summary": "{{ site }} averages {{ value }}"},
    },
}
DEVICE_RULE = {"name": "device-spike", "spec": {"threshold": {"condition": "value > 95.0"}}}
HOT_MINUTES = (1, 4)  # berlin's even devices send 90 in minutes 1 and 4: the site averages 65
MINUTES = 7
DEVICES = [f"{site}-{i}" for site in ("berlin", "paris") for i in range(12)]


class GroupPipeline(Pipeline):
    @property
    def topics(self) -> dict[str, str]:
        return {**super().topics, "repartition": f"{self.name}-repartition"}

    def produce(self, records: list[tuple[str, bytes]]) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for dev, raw in records:
            p.produce(self.topics["events"], raw, dev.encode(), partition=partition_of(dev, PARTS),
                      on_delivery=report)
        assert p.flush(60) == 0
        assert not errors, errors[:3]

    def lag(self, topic_kind: str, group: str) -> int:
        """Records of a topic that the group has not committed yet."""
        topic = self.topics[topic_kind]
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            tps = c.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
            return sum(c.get_watermark_offsets(tp, timeout=10)[1] - max(tp.offset, 0) for tp in tps)
        finally:
            c.close()


@pytest.fixture
def group_evaluators() -> Iterator[list[EvaluatorProcess]]:
    made: list[EvaluatorProcess] = []
    yield made
    for e in made:
        if e.running():
            e.kill9()


@pytest.fixture
def groups_pipeline(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> GroupPipeline:
    pipe = GroupPipeline(kafka_bootstrap, redis_url, unique, tmp_path / "config.json",
                         rules=[RULE, DEVICE_RULE])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = pipe.topics
    new = [NewTopic(topics[k], PARTS, 1) for k in ("events", "repartition")] + [
        NewTopic(topics[k], 1, 1) for k in ("alerts", "late", "deadLetter", "audit")
    ]
    for fut in admin.create_topics(new).values():
        fut.result(timeout=30)
    wait_for(lambda: all(t in admin.list_topics(timeout=5).topics for t in topics.values()), "topics", 30)
    return pipe


def stream() -> list[dict[str, Any]]:
    """Every device sends every 2 s for 7 minutes (in event-time order)."""
    rnd = random.Random(4)
    out = []
    for t in range(0, MINUTES * 60_000, 2000):
        for i, dev in enumerate(DEVICES):
            hot = dev.startswith("berlin") and i % 2 == 0 and t // 60_000 in HOT_MINUTES
            ts = T0 + t + rnd.randint(0, 900)
            out.append({"tenant": "acme", "deviceId": dev, "seq": t // 2000, "ts": ts, "type": "cpu",
                        "site": dev.split("-")[0], "value": 90 if hot else 40})
    out.sort(key=lambda e: (e["ts"], e["deviceId"]))
    return out


def evaluate(cfg: PipelineConfig, events: list[dict[str, Any]], *, partitions: int,
             repartition: bool) -> list[dict[str, Any]]:
    """The engine alone: ``partitions`` partitions with the evaluator's settings (repartition on or off);
    off with one partition is the whole stream, the reference for a rule by site."""
    settings = dataclasses.replace(engine_settings(cfg), repartition=repartition)
    engine = Engine(settings, compile_rules(cfg), clock=lambda: 0.0)
    for e in events:
        engine.partition(partition_of(e["deviceId"], partitions)).offer(e, e["deviceId"], e["seq"], e["ts"])
    return [a for part in engine.partitions.values() for a in part.take_alerts()]


def transitions(alerts: list[dict[str, Any]]) -> set[tuple[str, str, str, int]]:
    return {(a["id"], a["status"], a["groupKey"], a["startsAtMs"]) for a in alerts}


def summary(alerts: list[dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    return sorted((a["id"], a["status"], a["values"]["value"], a["values"]["count"]) for a in alerts)


def site_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a.get("rule") == "site-avg"]


def test_avg_by_site_over_all_partitions_fires_once_per_episode(
    groups_pipeline: GroupPipeline, group_evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipe = groups_pipeline
    cfg = pipe.write()
    events = stream()
    berlin = [d for d in DEVICES if d.startswith("berlin")]
    assert {partition_of(d, PARTS) for d in berlin} == set(range(PARTS))  # the site spans every partition
    expected = site_alerts(evaluate(cfg, events, partitions=1, repartition=False))
    in_time = sorted(expected, key=lambda a: a["eventTimeMs"])
    assert [(a["status"], a["startsAtMs"] - T0) for a in in_time] == [
        ("firing", 120_000), ("resolved", 120_000), ("firing", 300_000), ("resolved", 300_000)]
    # what the evaluator computed before the repartition stage: each partition its own berlin average
    per_partition = site_alerts(evaluate(cfg, events, partitions=PARTS, repartition=False))
    # (the same ids — an id names rule, group and episode, not the partition — but several firing
    # messages per episode with partial averages and counts, and episodes that never end)
    assert summary(per_partition) != summary(expected)
    assert {a["values"]["count"] for a in per_partition if a["status"] == "firing"} != {12 * 30}

    ev = EvaluatorProcess(pipe, tmp_path, batch_size=500, checkpoint_interval=0.3)
    group_evaluators.append(ev)
    ev.start()
    pipe.produce([(e["deviceId"], orjson.dumps(e)) for e in events])
    got = site_alerts(pipe.read("alerts", min_count=len(expected), timeout=240))
    assert transitions(got) == transitions(expected)
    firing = [a for a in got if a["status"] == "firing"]
    assert len(firing) == 2  # once per episode
    for a in firing:
        assert a["groupKey"] == "site=berlin" and a["labels"]["site"] == "berlin"
        assert a["values"]["value"] == pytest.approx(65.0)
        assert a["values"]["count"] == 12 * 30  # every berlin event of the minute, from all 6 partitions
        assert a["annotations"]["summary"] == "berlin averages 65"
    wait_for(lambda: ev.metric("alertpipe_evaluator_repartition_forwarded_total") == len(events),
             "every event forwarded once", 120)
    assert ev.metric("alertpipe_evaluator_group_assigned_partitions") == PARTS
    results = {k: v for k, v in ev.metrics().items()
               if k.startswith("alertpipe_evaluator_repartition_events")}
    assert not any('result="late"' in k or 'result="stale"' in k for k in results), results
    assert ev.stop() == 0
    assert "Traceback" not in ev.log_text()


def assert_drained_to(pipe: GroupPipeline, group: str, expected: list[dict[str, Any]]) -> None:
    """Once every events offset of ``group`` is committed, the site alerts are the expected ones:
    repeats of a transition are allowed (at-least-once), with the same id and values."""
    site_alerts(pipe.read("alerts", min_count=len(expected), timeout=240))
    wait_for(lambda: pipe.lag("events", group) == 0, "events committed", 180, interval=0.5)
    got = site_alerts(pipe.read("alerts", min_count=len(expected), timeout=60))
    assert transitions(got) == transitions(expected)
    assert {orjson.dumps(x["values"], option=orjson.OPT_SORT_KEYS) for x in got} == {
        orjson.dumps(x["values"], option=orjson.OPT_SORT_KEYS) for x in expected}


def test_kill_9_mid_stream_gives_exactly_the_expected_alert_ids(
    groups_pipeline: GroupPipeline, group_evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipe = groups_pipeline
    cfg = pipe.write()
    events = stream()
    expected = site_alerts(evaluate(cfg, events, partitions=1, repartition=False))
    assert len(expected) == 4
    records = [(e["deviceId"], orjson.dumps(e)) for e in events]
    # a few copies (the ingestor's retries): stage 1's dedup skips them
    rnd = random.Random(9)
    for i in sorted(rnd.sample(range(len(records) - 500), 200), reverse=True):
        records.insert(i + rnd.randint(1, 400), records[i])
    parts = [records[i * len(records) // 5 : (i + 1) * len(records) // 5] for i in range(5)]
    pipe.produce(parts[0])
    ev = EvaluatorProcess(pipe, tmp_path, batch_size=300, checkpoint_interval=0.2)
    group_evaluators.append(ev)
    for part in parts[1:]:
        ev.start()
        pipe.produce(part)
        wait_for(lambda: ev.metric("alertpipe_evaluator_repartition_forwarded_total") > 0, "forwarding", 90)
        time.sleep(rnd.uniform(0.1, 1.5))
        ev.kill9()
    ev.start()
    # the last process may have committed everything before its kill: wait for this one to run
    # (a SIGTERM during its start-up would end it before its handler is installed)
    wait_for(lambda: ev.metric("alertpipe_evaluator_group_assigned_partitions") > 0, "stage 2 assigned", 90)
    assert_drained_to(pipe, ev.group, expected)
    assert ev.stop() == 0
    log = ev.log_text()
    assert "group partition" in log and "restored checkpoint" in log  # stage 2 resumed from Redis


def test_events_partitions_that_never_carry_an_event_do_not_hold_the_groups_back(
    groups_pipeline: GroupPipeline, group_evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    """Two devices, so at least four of the six events partitions stay empty: once caught up and
    quiet for idleTimeout they send an idle mark, and the site's window still closes."""
    pipe = groups_pipeline
    pipe.extra = {"idleTimeout": "3s"}
    cfg = pipe.write()
    devices = ["berlin-0", "berlin-2"]
    events = [e for e in stream() if e["deviceId"] in devices and e["ts"] < T0 + 150_000]
    assert len({partition_of(d, PARTS) for d in devices}) <= 2
    expected = [a for a in site_alerts(evaluate(cfg, events, partitions=1, repartition=False))
                if a["status"] == "firing"]
    assert [(a["startsAtMs"] - T0, a["values"]["value"]) for a in expected] == [(120_000, 90.0)]
    ev = EvaluatorProcess(pipe, tmp_path, batch_size=500, checkpoint_interval=0.3)
    group_evaluators.append(ev)
    ev.start()
    pipe.produce([(e["deviceId"], orjson.dumps(e)) for e in events])
    got = site_alerts(pipe.read("alerts", min_count=1, timeout=120))
    firing = [a for a in got if a["status"] == "firing"]
    assert transitions(firing) == transitions(expected)
    assert firing[0]["values"]["count"] == 2 * 30
    assert ev.stop() == 0
    assert "Traceback" not in ev.log_text()


def test_a_consumer_joining_and_one_leaving_give_the_same_group_alerts(
    groups_pipeline: GroupPipeline, group_evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    """Both stages rebalance (events and repartition partitions move between two processes)."""
    pipe = groups_pipeline
    cfg = pipe.write()
    events = stream()
    expected = site_alerts(evaluate(cfg, events, partitions=1, repartition=False))
    records = [(e["deviceId"], orjson.dumps(e)) for e in events]
    third = len(records) // 3
    a = EvaluatorProcess(pipe, tmp_path, batch_size=300, checkpoint_interval=0.3)
    b = EvaluatorProcess(pipe, tmp_path, batch_size=300, checkpoint_interval=0.3, group=a.group)
    group_evaluators.extend([a, b])
    pipe.produce(records[:third])
    a.start()
    wait_for(lambda: a.metric("alertpipe_evaluator_repartition_forwarded_total") > 0, "a forwarding", 90)
    b.start()  # joins mid-stream: both consumer groups rebalance
    wait_for(lambda: b.metric("alertpipe_evaluator_group_assigned_partitions") > 0, "b owns group partitions",
             90)
    wait_for(lambda: b.metric("alertpipe_evaluator_assigned_partitions") > 0, "b owns events partitions", 90)
    pipe.produce(records[third : 2 * third])
    wait_for(lambda: b.metric("alertpipe_evaluator_events_consumed_total") > 0, "b consuming", 90)
    assert a.stop() == 0  # leaves after a final checkpoint of both stages
    pipe.produce(records[2 * third :])
    assert_drained_to(pipe, a.group, expected)
    assert b.stop() == 0
    for proc in (a, b):
        assert "Traceback" not in proc.log_text()
