# mypy: disable-error-code="union-attr, index, arg-type"
"""Canary rollouts on the devstack: operator, pod runner, real Kafka and Redis, events flowing.

A rule change is rolled out 10 % → 50 % → 100 % (each step a handover with a warm-up) while 40
devices send events; afterwards the alerts topic holds, per device, exactly the transitions a
single-track control run produces for the same events: none lost, none doubled at a step boundary.
A bad candidate (a rule that fires three times as often) is rolled back by the analysis and the
stable track keeps paging for the canary's devices.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from alertpipe.workers.config import bucket_of
from devstack.pipeline import GROUP, VERSION, condition, http, pod_address, wait_for
from devstack.pytest_plugin import LocalPods
from devstack.rollout_load import EventLoad, alerts_on, expected, per_device

pytestmark = pytest.mark.e2e

API_KEY = "canary-key-0123456789abcdef"
RULE = "cpu-hot"


def pipeline(name: str, bootstrap: str, redis_url: str, pods: LocalPods, rollout: dict[str, Any]) -> Any:
    placed = {"nodeSelector": pods.node_selector}
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


def rule(pipeline_name: str, condition_text: str, summary: str) -> Any:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AlertRule",
        "metadata": {"name": RULE, "labels": {"alertpipe.io/pipeline": pipeline_name}},
        "spec": {"select": {"types": ["cpu"]}, "threshold": {"condition": condition_text},
                 "annotations": {"summary": summary}},
    }


ROLLOUT = {
    "steps": [{"weight": 10, "pause": "2s"}, {"weight": 50, "pause": "2s"}],
    "warmup": "3s",
    "analysis": {"interval": "2s", "failureLimit": 1, "onNoData": "pause", "maxAlertRatio": 2},
}


class Setup:
    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.core, self.co = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.ns, self.name = namespace, name
        self.phases: list[tuple[str, int]] = []

    def canary(self) -> dict[str, Any]:
        obj = self.co.get_namespaced_custom_object(GROUP, VERSION, self.ns, "alertpipelines", self.name)
        return dict(obj.get("status", {}).get("canary") or {})

    def watch_phase(self) -> dict[str, Any]:
        c = self.canary()
        if c and (not self.phases or self.phases[-1] != (c["phase"], c["weight"])):
            self.phases.append((c["phase"], c["weight"]))
        return c

    def config(self, suffix: str = "") -> dict[str, Any]:
        cm = self.core.read_namespaced_config_map(f"{self.name}-config{suffix}", self.ns)
        return dict(json.loads(cm.data["config.json"]))


def start(api: client.ApiClient, namespace: str, bootstrap: str, redis_url: str, pods: LocalPods,
          operator: Path, rollout: dict[str, Any]) -> tuple[Setup, str]:
    s = Setup(api, namespace, "edge")
    s.core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="ingest-keys"), string_data={"keys": f"{namespace}:{API_KEY}\n"}))
    s.co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines",
                                         pipeline("edge", bootstrap, redis_url, pods, rollout))
    s.co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules",
                                         rule("edge", "value > 80", "v1 {{ value }}"))

    def ready() -> bool:
        c = condition(s.co, namespace, "edge", "Ready")
        return c is not None and c["status"] == "True"

    try:
        wait_for(ready, "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    ingestor = f"{pod_address(s.core, namespace, 'edge', 'ingestor')}:8080"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
    evaluator = f"{pod_address(s.core, namespace, 'edge', 'evaluator')}:9102"
    wait_for(lambda: b"alertpipe_evaluator_assigned_partitions 2.0" in http(
        "GET", f"http://{evaluator}/metrics")[1], "the stable evaluator holding both partitions", 120)
    return s, ingestor


def replace_rule(s: Setup, condition_text: str, summary: str) -> None:
    live = s.co.get_namespaced_custom_object(GROUP, VERSION, s.ns, "alertrules", RULE)
    body = rule("edge", condition_text, summary)
    body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    s.co.replace_namespaced_custom_object(GROUP, VERSION, s.ns, "alertrules", RULE, body)


def settle(bootstrap: str, topic: str, want: int) -> list[dict[str, Any]]:
    """The alerts topic once it stops growing (and holds at least ``want`` records)."""
    last: list[dict[str, Any]] = []
    for _ in range(30):
        got = alerts_on(bootstrap, topic)
        if len(got) >= want and len(got) == len(last):
            return got
        last = got
        time.sleep(2)
    return last


def test_rule_change_rolls_out_10_50_100_without_losing_or_doubling_an_alert(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:
    s, ingestor = start(api, namespace, kafka_bootstrap, redis_url, pod_runner, operator, ROLLOUT)
    topic = s.config()["kafka"]["topics"]["alerts"]
    load = EventLoad(ingestor, API_KEY, namespace).start()
    try:
        wait_for(lambda: load.rounds >= 10, "events flowing", 30)
        replace_rule(s, "value > 80", "v2 {{ value }}")  # same verdicts, a new revision
        try:
            wait_for(lambda: s.watch_phase().get("phase") == "Succeeded", "the rollout to succeed", 180,
                     every=0.2)
        except AssertionError:
            raise AssertionError(f"{s.phases}\n{operator.read_text()[-4000:]}") from None
        wait_for(lambda: load.rounds >= 10 + 15, "events after promotion", 30)
    finally:
        load.stop()
    assert [p for p, _ in s.phases if p == "Progressing"] and ("Progressing", 10) in s.phases
    assert ("Progressing", 50) in s.phases and ("Promoting", 100) in s.phases, s.phases
    stable = s.config()
    assert stable["rules"][0]["spec"]["annotations"]["summary"].startswith("v2")
    assert stable.get("track") is None
    want = expected(load.sent, namespace, "edge", RULE)
    got = per_device(settle(kafka_bootstrap, topic, sum(want.values())))
    missing, doubled = want - got, got - want
    assert not missing and not doubled, (f"missing {sorted(missing)[:5]} doubled {sorted(doubled)[:5]}",
                                         s.phases)
    # both revisions wrote alerts: the candidate's (v2) for its keys during the steps, v1 before
    summaries = {a["annotations"]["summary"][:2] for a in alerts_on(kafka_bootstrap, topic)}
    assert summaries == {"v1", "v2"}
    # the canary track is gone
    wait_for(lambda: not s.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=evaluator-canary").items,
        "the candidate pods gone", 60)


def test_a_noisy_candidate_is_rolled_back_and_stable_keeps_paging(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:
    s, ingestor = start(api, namespace, kafka_bootstrap, redis_url, pod_runner, operator, ROLLOUT)
    topic = s.config()["kafka"]["topics"]["alerts"]
    load = EventLoad(ingestor, API_KEY, namespace).start()
    try:
        wait_for(lambda: load.rounds >= 10, "events flowing", 30)
        replace_rule(s, "value % 2 == 1", "bad {{ value }}")  # fires and resolves on every event
        try:
            wait_for(lambda: s.watch_phase().get("phase") == "RolledBack", "the rollback", 180, every=0.2)
        except AssertionError:
            raise AssertionError(f"{s.phases}\n{operator.read_text()[-4000:]}") from None
        rolled_back = time.time() * 1000
        cond = condition(s.co, namespace, "edge", "Canary")
        assert cond is not None and (cond["status"], cond["reason"]) == ("False", "RolledBack")
        assert "maxAlertRatio" in cond["message"], cond
        events = s.core.list_namespaced_event(namespace).items
        assert any(e.reason == "RolledBack" and "maxAlertRatio" in (e.message or "") for e in events)
        wait_for(lambda: not s.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=evaluator-canary").items,
            "the candidate scaled away", 60)
        assert s.config()["rules"][0]["spec"]["threshold"]["condition"] == "value > 80"
        wait_for(lambda: load.rounds >= 60, "events after the rollback", 60)
    finally:
        load.stop()
    canary_devices = {d for d in load.devices if bucket_of(d) < 1000}
    assert canary_devices, "no device in the first 10 % of buckets"
    after = [a for a in settle(kafka_bootstrap, topic, 1)
             if a["labels"]["deviceId"] in canary_devices and a["eventTimeMs"] > rolled_back + 5000]
    assert after and all(a["annotations"]["summary"].startswith("v1") for a in after)


SHADOW = {**ROLLOUT, "strategy": "shadow-then-canary", "shadow": {"duration": "12s"}}


def test_shadow_reports_no_diff_for_a_no_op_change_and_a_real_one_for_a_changed_condition(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods,
    kafka_bootstrap: str, redis_url: str,
) -> None:
    s, ingestor = start(api, namespace, kafka_bootstrap, redis_url, pod_runner, operator, SHADOW)
    load = EventLoad(ingestor, API_KEY, namespace).start()
    try:
        wait_for(lambda: load.rounds >= 10, "events flowing", 30)
        replace_rule(s, "value > 80", "v2 {{ value }}")  # no-op for verdicts
        try:
            wait_for(lambda: s.watch_phase().get("phase") in ("Progressing", "WaitingForPromote"),
                     "the shadow phase to end", 120, every=0.2)
        except AssertionError:
            raise AssertionError(f"{s.phases}\n{operator.read_text()[-4000:]}") from None
        assert ("Shadow", 0) in s.phases, s.phases
        clean = s.canary()
        assert clean["phase"] == "Progressing", clean
        assert clean["shadowDiff"]["both"] > 0 and not clean["shadowDiff"]["examples"], clean["shadowDiff"]
        assert clean["shadowDiff"]["onlyStable"] == clean["shadowDiff"]["onlyCandidate"] == 0
        # the candidate's shadow alerts went to the shadow topic
        shadow = alerts_on(kafka_bootstrap, s.config()["kafka"]["topics"]["alerts"] + "-shadow")
        assert any(a["annotations"]["summary"].startswith("v2") for a in shadow)

        replace_rule(s, "value > 96", "v3 {{ value }}")  # fires one event later: other episodes
        s.phases.clear()
        wait_for(lambda: s.watch_phase().get("phase") == "WaitingForPromote", "the diff to hold the rollout",
                 120, every=0.2)
    finally:
        load.stop()
    held = s.canary()
    diff = held["shadowDiff"]
    assert diff["onlyStable"] > 0 and diff["onlyCandidate"] > 0, diff
    assert diff["byRule"][RULE]["onlyCandidate"] == diff["onlyCandidate"]
    assert diff["examples"] and "transition(s) differ" in held["message"]
    assert s.config()["rules"][0]["spec"]["threshold"]["condition"] == "value > 80"  # stable untouched
