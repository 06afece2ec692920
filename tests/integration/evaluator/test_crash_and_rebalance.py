"""kill -9 at random points and restarts, and a consumer group that grows and shrinks mid-stream:
the alerts topic ends up with exactly the expected alert ids (repeats carry the same id)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .conftest import PARTITIONS, EvaluatorProcess, Pipeline, wait_for
from .streams import RULES, comparable, dirty, expected_alerts, make_stream

pytestmark = pytest.mark.integration


def committed(pipe: Pipeline, group: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": pipe.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(pipe.topics["events"], p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def all_committed(pipe: Pipeline, group: str) -> bool:
    try:
        return committed(pipe, group) == pipe.end_offsets()
    except KafkaException as e:  # NOT_COORDINATOR while the offsets topic loads: ask again
        if e.args[0].retriable() or e.args[0].code() == KafkaError.NOT_COORDINATOR:
            return False
        raise


def rewind(pipe: Pipeline, group: str) -> bool:
    """Commit offset 0 on every events partition for ``group``; False while the group is not empty."""
    c = Consumer({"bootstrap.servers": pipe.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(pipe.topics["events"], p, 0) for p in range(PARTITIONS)],
                 asynchronous=False)  # fmt: skip
        return True
    except KafkaException as e:
        if e.args[0].code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
                                KafkaError.NOT_COORDINATOR) or e.args[0].retriable():  # fmt: skip
            return False
        raise
    finally:
        c.close()


def test_kill_9_at_random_points_gives_exactly_the_expected_alert_ids(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipeline.rules = RULES
    cfg = pipeline.write()
    stream = make_stream(seed=11, devices=60, per_device=400)
    records, counts = dirty(stream, seed=11)
    expected = expected_alerts(cfg, stream.clean)
    # the stream arrives in five parts; a part lands while the evaluator runs, which is then killed
    # at a random moment, four times
    parts = [records[i * len(records) // 5 : (i + 1) * len(records) // 5] for i in range(5)]
    pipeline.produce(parts[0])
    rnd = random.Random(11)
    ev = EvaluatorProcess(pipeline, tmp_path, batch_size=300, checkpoint_interval=0.2)
    evaluators.append(ev)
    for part in parts[1:]:
        ev.start()
        pipeline.produce(part)
        wait_for(lambda: ev.metric("alertpipe_evaluator_events_consumed_total") > 0, "consuming", 60)
        time.sleep(rnd.uniform(0.05, 0.6))
        ev.kill9()
    ev.start()
    wait_for(lambda: all_committed(pipeline, ev.group), "every offset committed", 180, interval=0.5)
    got = pipeline.read("alerts", min_count=len(expected))
    assert {(a["id"], a["status"]) for a in got} == {(a["id"], a["status"]) for a in expected}
    # a repeat is the same transition again (same id, same content), never a new alert
    assert set(comparable(got)) == set(comparable(expected))
    ev.stop()
    assert "restored checkpoint, seeking to offset" in ev.log_text()  # restarts resumed from Redis


def test_a_consumer_joining_and_one_leaving_give_the_same_alerts(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipeline.rules = RULES
    cfg = pipeline.write()
    stream = make_stream(seed=5, devices=60, per_device=300)
    records, _ = dirty(stream, seed=5)
    expected = expected_alerts(cfg, stream.clean)
    third = len(records) // 3
    a = EvaluatorProcess(pipeline, tmp_path, batch_size=500, checkpoint_interval=0.3)
    b = EvaluatorProcess(pipeline, tmp_path, batch_size=500, checkpoint_interval=0.3, group=a.group)
    evaluators.extend([a, b])
    pipeline.produce(records[:third])
    a.start()
    wait_for(lambda: a.metric("alertpipe_evaluator_events_consumed_total") > 0, "a consuming", 60)
    b.start()  # joins mid-stream: the group rebalances
    wait_for(lambda: b.metric("alertpipe_evaluator_assigned_partitions") > 0, "b assigned", 60)
    pipeline.produce(records[third : 2 * third])
    wait_for(lambda: b.metric("alertpipe_evaluator_events_consumed_total") > 0, "b consuming", 60)
    assert a.stop() == 0  # leaves: its partitions move to b after a final checkpoint
    pipeline.produce(records[2 * third :])
    wait_for(lambda: all_committed(pipeline, a.group), "every offset committed", 180, interval=0.5)
    got = pipeline.read("alerts", min_count=len(expected))
    assert set(comparable(got)) == set(comparable(expected))
    assert {(x["id"], x["status"]) for x in got} == {(x["id"], x["status"]) for x in expected}
    assert b.stop() == 0
    for proc in (a, b):
        assert "Traceback" not in proc.log_text()


def test_a_checkpoint_ahead_of_the_committed_offset_gets_committed(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    """A crash between the checkpoint write and the offset commit leaves Redis ahead of Kafka. The
    next owner resumes from the checkpoint; with nothing more to read it must still commit that
    offset, or the group shows lag forever (this once hung the kill -9 test above)."""
    pipeline.rules = RULES
    pipeline.write()
    stream = make_stream(seed=5, devices=12, per_device=50)
    records, _ = dirty(stream, seed=5)
    pipeline.produce(records)
    first = EvaluatorProcess(pipeline, tmp_path, batch_size=300, checkpoint_interval=0.2)
    evaluators.append(first)
    first.start()
    wait_for(lambda: all_committed(pipeline, first.group), "every offset committed", 180, interval=0.5)
    assert first.stop() == 0
    # the crash window: Kafka's committed offsets behind the checkpoints in Redis (a commit from
    # outside the group is taken once the stopped static member's session has expired: 10 s)
    wait_for(lambda: rewind(pipeline, first.group), "offsets rewound to 0", 60, interval=1)
    assert not all_committed(pipeline, first.group)
    second = EvaluatorProcess(pipeline, tmp_path, batch_size=300, checkpoint_interval=0.2, group=first.group)
    evaluators.append(second)
    second.start()
    wait_for(
        lambda: all_committed(pipeline, first.group), "the restored offsets committed", 120, interval=0.5
    )
    assert second.metric("alertpipe_evaluator_events_consumed_total") == 0  # resumed at the checkpoints
    assert second.stop() == 0
