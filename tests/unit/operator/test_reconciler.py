"""The Reconciler built with in-memory collaborators (memory.py): one reconcile writes topics, the
config, workloads, status and Events; a second writes nothing; failures and bad input end in status."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from alertpipe.operator.decisions.compile import CONFIG_KEY
from alertpipe.operator.decisions.connectivity import Failure
from alertpipe.operator.reconciler import OperatorSettings, Reconciler
from tests.unit.operator.memory import MemoryAdmins, MemoryKube, MemoryRedisCheck

pytestmark = pytest.mark.unit

NS = "team"


def pipeline(name: str = "p", generation: int = 1, **spec: Any) -> dict[str, Any]:
    body = {
        "kafka": {"bootstrapServers": "memory:9092", "topics": {"events": {"partitions": 4}}},
        "redis": {"url": "redis://memory:6379/0"},
        "channels": [{"name": "ops", "webhook": {"url": "https://ops.example/hook"}}],
        **spec,
    }
    return {
        "apiVersion": "alertpipe.io/v1alpha1",
        "kind": "AlertPipeline",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": generation},
        "spec": body,
    }


def rule(name: str, condition: str = "value > 90", channels: tuple[str, ...] = ("ops",)) -> dict[str, Any]:
    return {
        "apiVersion": "alertpipe.io/v1alpha1",
        "kind": "AlertRule",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "labels": {}},
        "spec": {
            "select": {"types": ["cpu"]},
            "by": ["deviceId"],
            "threshold": {"condition": condition},
            "severity": "critical",
            "channels": list(channels),
        },
    }


class World:
    def __init__(self) -> None:
        self.kube = MemoryKube()
        self.admins = MemoryAdmins()
        self.redis = MemoryRedisCheck()
        self.rec = Reconciler(self.kube, OperatorSettings(), self.admins, self.redis)  # type: ignore[arg-type]

    def seen(self, *bodies: dict[str, Any]) -> None:
        for b in bodies:
            if b["kind"] == "AlertPipeline":
                self.kube.objects[("AlertPipeline", NS, b["metadata"]["name"])] = b
                self.rec.pipeline_seen(b)
            else:
                self.kube.objects[("AlertRule", NS, b["metadata"]["name"])] = b
                self.rec.rule_seen(b)

    async def reconcile(self, name: str = "p") -> float | None:
        again = await self.rec.reconcile_pipeline(NS, name)
        for _ in range(5):  # Events posted in the background
            await asyncio.sleep(0)
        return again

    def status(self, kind: str = "AlertPipeline", name: str = "p") -> dict[str, Any]:
        return dict(self.kube.objects[(kind, NS, name)].get("status") or {})

    def condition(self, type_: str, kind: str = "AlertPipeline", name: str = "p") -> dict[str, Any]:
        return next(c for c in self.status(kind, name)["conditions"] if c["type"] == type_)

    def reasons(self) -> list[str]:
        return sorted(e["reason"] for e in self.kube.events())


async def test_one_reconcile_writes_everything_and_a_second_writes_nothing() -> None:
    w = World()
    w.seen(pipeline(), rule("hot"), rule("broken", condition="value >>> 3"))
    again = await w.reconcile()
    assert again is None
    assert w.admins.admin.topics["team.p.events"] == 4 and len(w.admins.admin.topics) >= 4
    cm = w.kube.objects[("ConfigMap", NS, "p-config")]
    config = json.loads(cm["data"][CONFIG_KEY])
    assert [r["name"] for r in config["rules"]] == ["hot"]  # the broken rule never blocks the others
    kinds = {k for (k, _, _) in w.kube.objects}
    assert {"Deployment", "ServiceAccount", "ConfigMap", "Service"} <= kinds
    assert w.condition("TopicsReady")["status"] == "True"
    assert w.condition("RedisReady")["status"] == "True"
    rules = w.condition("RulesReady")
    assert rules["status"] == "False" and "broken" in rules["message"]
    status = w.status()
    assert status["revision"] == config["revision"] and status["invalidRules"] == ["broken"]
    assert status["observedGeneration"] == 1 and status["rules"] == {"valid": 1, "invalid": 1, "disabled": 0}
    assert {"TopicCreated", "ConfigCreated"} <= set(w.reasons())
    assert len(w.kube.events("TopicCreated")) == 1  # one Event naming every topic, not one per topic

    w.rec.store.pipelines[(NS, "p")]["status"] = w.status()  # (the watch would bring it back)
    writes, events = len(w.kube.writes), len(w.kube.events())
    await w.reconcile()
    assert w.kube.writes[writes:] == [] and len(w.kube.events()) == events


async def test_kafka_and_redis_down_show_in_status_with_a_retry_and_one_event_each() -> None:
    w = World()
    w.admins.admin.down = True
    w.redis.failure = Failure("RedisUnreachable", "cannot reach Redis at memory:6379: connection refused")
    w.seen(pipeline())
    again = await w.reconcile()
    assert again is not None and 0 < again <= 60
    topics, redis = w.condition("TopicsReady"), w.condition("RedisReady")
    assert (topics["status"], topics["reason"]) == ("False", "KafkaUnreachable")
    assert (redis["status"], redis["reason"]) == ("False", "RedisUnreachable")
    assert w.reasons().count("KafkaUnreachable") == 1 and w.reasons().count("RedisUnreachable") == 1

    w.admins.admin.down = False
    w.redis.failure = None
    w.rec.store.pipelines[(NS, "p")]["status"] = w.status()
    assert await w.reconcile() is None
    assert w.condition("TopicsReady")["status"] == "True" and w.condition("RedisReady")["status"] == "True"


async def test_an_invalid_spec_is_reported_once_with_the_field_path() -> None:
    w = World()
    w.seen(pipeline(kafka={"topics": {}}))
    assert await w.reconcile() is None
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.kafka.bootstrapServers" in ready["message"]
    w.rec.store.pipelines[(NS, "p")]["status"] = w.status()
    await w.reconcile()
    assert w.reasons() == ["InvalidSpec"]  # not again while the message is the same
    assert ("AlertPipeline", NS, "p") in w.kube.objects and (
        "ConfigMap",
        NS,
        "p-config",
    ) not in w.kube.objects


async def test_rule_statuses_name_the_live_revision_and_reject_an_unknown_channel() -> None:
    w = World()
    w.seen(pipeline(), rule("hot"), rule("nowhere", channels=("pager",)))
    assert await w.rec.reconcile_rule_statuses(NS) is None
    assert "status" not in w.kube.objects[("AlertRule", NS, "hot")]  # not before the pipeline compiled
    await w.reconcile()
    await w.rec.reconcile_rule_statuses(NS)
    for _ in range(5):
        await asyncio.sleep(0)
    revision = w.status()["revision"]
    hot = w.status("AlertRule", "hot")
    assert hot["live"] == [{"pipeline": "p", "revision": revision}] and hot["pipelines"] == ["p"]
    assert w.condition("Valid", "AlertRule", "hot")["status"] == "True"
    bad = w.condition("Valid", "AlertRule", "nowhere")
    assert bad["status"] == "False" and "pager" in bad["message"] and "spec.channels" in bad["message"]
    assert w.reasons().count("RuleRejected") == 1


async def test_a_hand_edit_of_an_owned_object_is_restored_with_an_event() -> None:
    w = World()
    w.seen(pipeline())
    await w.reconcile()
    live = w.kube.objects[("ConfigMap", NS, "p-config")]
    edited = await w.kube.replace({**live, "data": {CONFIG_KEY: "{}"}})  # someone edits the ConfigMap
    assert w.rec.applier.owned_changed(edited) == "p"
    await w.reconcile()
    assert json.loads(w.kube.objects[("ConfigMap", NS, "p-config")]["data"][CONFIG_KEY])["revision"]
    assert w.reasons().count("DriftCorrected") == 1
    assert w.rec.applier.owned_changed(w.kube.objects[("ConfigMap", NS, "p-config")]) is None  # our write


async def test_disabling_a_role_deletes_its_deployment() -> None:
    w = World()
    w.seen(pipeline())
    await w.reconcile()
    for (k, _, _), o in list(w.kube.objects.items()):
        if k == "Deployment":
            w.rec.deployment_seen(o)
    assert ("Deployment", NS, "p-ingestor") in w.kube.objects
    w.seen(pipeline(generation=2, ingestor={"enabled": False}))
    await w.reconcile()
    assert ("Deployment", NS, "p-ingestor") not in w.kube.objects
    assert ("Service", NS, "p-ingestor") not in w.kube.objects
    assert "WorkloadRemoved" in w.reasons()


async def test_a_risky_spec_posts_one_spec_warning_per_generation() -> None:
    w = World()
    w.seen(pipeline(idleTimeout="4s"))
    await w.reconcile()
    (event,) = w.kube.events("SpecWarning")
    assert event["type"] == "Warning" and event["message"].startswith("spec.idleTimeout: 4s")
    w.rec.store.pipelines[(NS, "p")]["status"] = w.status()  # same generation: not again
    await w.reconcile()
    assert len(w.kube.events("SpecWarning")) == 1
    w.seen(pipeline(generation=2, idleTimeout="5s"))
    await w.reconcile()
    assert len(w.kube.events("SpecWarning")) == 2
