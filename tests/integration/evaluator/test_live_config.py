"""Config revisions while events flow: an edited rule is live within 3 s without a restart; the
stopEvaluation kill switch pauses consumption (lag grows) and nothing is lost when it is lifted; a
disabledRules switch resolves that rule's alerts, leaves the others alone and expires at `until`."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from .conftest import EvaluatorProcess, Pipeline, partition_of, wait_for

pytestmark = pytest.mark.integration

DEVICES = ["live-a", "live-b", "live-c"]


class LiveFeed:
    """Events with event time = now, every ``period`` seconds per device, on a thread."""

    def __init__(self, pipe: Pipeline, value: float, period: float = 0.02) -> None:
        self.pipe = pipe
        self.value = value
        self.period = period
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.pipe.bootstrap, "linger.ms": 1, "enable.idempotence": True})
        seq = 0
        topic = self.pipe.topics["events"]
        while not self.stop.is_set():
            now = int(time.time() * 1000)
            for dev in DEVICES:
                ev: dict[str, Any] = {
                    "tenant": "acme",
                    "deviceId": dev,
                    "seq": seq,
                    "ts": now,
                    "type": "cpu",
                    "value": self.value,
                }
                p.produce(topic, orjson.dumps(ev), dev.encode(), partition=partition_of(dev))
                self.sent += 1
            seq += 1
            p.poll(0)
            time.sleep(self.period)
        p.flush(30)

    def __enter__(self) -> LiveFeed:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


def hot_rule(threshold: float) -> dict[str, Any]:
    return {
        "name": "hot",
        "spec": {"select": {"types": ["cpu"]}, "threshold": {"condition": f"value > {threshold}"}},
    }


def test_an_edited_rule_is_live_within_3s_without_restart(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipeline.rules = [hot_rule(90.0)]
    first = pipeline.write()
    ev = EvaluatorProcess(pipeline, tmp_path, checkpoint_interval=0.5).start()
    evaluators.append(ev)
    with LiveFeed(pipeline, value=50.0):
        # devices are known once the watermark passed their first event (lateness 5 s)
        wait_for(lambda: ev.metric("alertpipe_evaluator_events_evaluated_total") > 0, "evaluating", 60)
        time.sleep(6.5)
        assert pipeline.read("alerts", quiet=0.5, timeout=5) == []  # 50 is not > 90
        pid = ev.proc.pid if ev.proc else None
        pipeline.rules = [hot_rule(40.0)]
        edited = pipeline.write()
        t_edit = time.time()
        alerts = pipeline.read("alerts", min_count=len(DEVICES), timeout=30, quiet=0.5)
        assert {a["groupKey"] for a in alerts} == {f"deviceId={d}" for d in DEVICES}
        assert all(a["status"] == "firing" and a["revision"] == edited.revision for a in alerts)
        live_after = min(a["processedAtMs"] for a in alerts) / 1000 - t_edit
        assert live_after <= 3.0, f"the edited rule fired {live_after:.2f}s after the edit"
        assert ev.metric(f'alertpipe_evaluator_config_revision_info{{revision="{edited.revision}"}}') == 1
        assert ev.metric(f'alertpipe_evaluator_config_revision_info{{revision="{first.revision}"}}') == 0
        assert ev.running() and ev.proc is not None and ev.proc.pid == pid and ev.starts == 1


def test_stop_evaluation_pauses_and_loses_nothing(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    pipeline.rules = [hot_rule(1000.0)]
    pipeline.write()
    ev = EvaluatorProcess(pipeline, tmp_path, checkpoint_interval=0.5).start()
    evaluators.append(ev)
    with LiveFeed(pipeline, value=50.0) as feed:
        wait_for(lambda: ev.metric("alertpipe_evaluator_events_consumed_total") > 0, "consuming", 60)
        pipeline.extra = {"killSwitches": {"stopEvaluation": {"reason": "incident 42"}}}
        pipeline.write()
        wait_for(lambda: ev.metric("alertpipe_evaluator_paused") == 1, "paused", 3)  # bench: ~0.1 s
        time.sleep(0.5)
        consumed = ev.metric("alertpipe_evaluator_events_consumed_total")
        time.sleep(2.0)
        assert ev.metric("alertpipe_evaluator_events_consumed_total") == consumed  # nothing read
        assert feed.sent > consumed
        pipeline.extra = {}
        pipeline.write()
        wait_for(lambda: ev.metric("alertpipe_evaluator_paused") == 0, "resumed", 3)
    total = feed.sent
    wait_for(
        lambda: ev.metric("alertpipe_evaluator_events_consumed_total") >= total, "every event consumed", 60
    )
    assert ev.metric("alertpipe_evaluator_events_consumed_total") == total
    assert ev.starts == 1 and ev.running()


def test_a_disabled_rule_resolves_its_alerts_stays_quiet_and_returns_at_until(
    pipeline: Pipeline, evaluators: list[EvaluatorProcess], tmp_path: Path
) -> None:
    warm = {"name": "warm", "spec": {"select": {"types": ["cpu"]}, "threshold": {"condition": "value > 30"}}}
    pipeline.rules = [hot_rule(40.0), warm]
    pipeline.write()
    ev = EvaluatorProcess(pipeline, tmp_path, checkpoint_interval=0.5).start()
    evaluators.append(ev)
    groups = {f"deviceId={d}" for d in DEVICES}

    def seen(alerts: list[Any], rule: str, status: str) -> list[Any]:
        return [a for a in alerts if a["rule"] == rule and a["status"] == status]

    with LiveFeed(pipeline, value=50.0):
        alerts = pipeline.read("alerts", min_count=2 * len(DEVICES), timeout=60, quiet=0.5)
        assert {a["groupKey"] for a in seen(alerts, "hot", "firing")} == groups
        assert {a["groupKey"] for a in seen(alerts, "warm", "firing")} == groups

        until = datetime.now(UTC) + timedelta(seconds=8)
        switch = {"name": "hot", "reason": "noisy rule INC-9", "until": until.isoformat()}
        pipeline.extra = {"killSwitches": {"disabledRules": [switch]}}
        disabled = pipeline.write()
        # `hot` goes as if deleted: its firing alerts resolve, under the revision that disabled it
        alerts = pipeline.read("alerts", min_count=3 * len(DEVICES), timeout=30, quiet=0.5)
        resolved = seen(alerts, "hot", "resolved")
        assert {a["groupKey"] for a in resolved} == groups
        assert all(a["revision"] == disabled.revision for a in resolved)
        assert ev.metric("alertpipe_evaluator_rules") == 1

        # at `until` it is back without a new revision (the worker reads the expiry itself) and fires
        # again; while it was disabled it never fired, and `warm` never stopped
        back = until.timestamp() * 1000
        wait_for(lambda: time.time() * 1000 > back, "the switch to expire", 15)
        alerts = pipeline.read("alerts", min_count=4 * len(DEVICES), timeout=30, quiet=0.5)
    hot_firing = seen(alerts, "hot", "firing")
    refired = [a for a in hot_firing if a["processedAtMs"] >= back]
    assert {a["groupKey"] for a in refired} == groups, "the rule did not return at `until`"
    assert len(hot_firing) == 2 * len(DEVICES), "the disabled rule fired while disabled"
    assert all(a["revision"] == disabled.revision for a in refired)
    assert seen(alerts, "warm", "resolved") == [], "disabling one rule touched another"
    assert ev.running() and ev.starts == 1
