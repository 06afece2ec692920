"""The scaler's tick with a fake apiserver and Kafka: it patches only the Deployment's replicas, posts
an Event with the numbers, writes status when something shows and not on every quiet tick."""

from __future__ import annotations

from typing import Any

import pytest

from alertpipe.operator.decisions.lag import GroupOffsets, PartitionOffsets
from alertpipe.operator.kafka_admin import KafkaAdminError
from alertpipe.operator.reconciler import OperatorSettings, Reconciler
from alertpipe.operator.scaler import Scaler

pytestmark = pytest.mark.unit


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.created: list[dict[str, Any]] = []

    async def merge_patch(
        self, kind: str, ns: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> Any:
        self.patches.append((kind, name, patch, sub))
        if kind == "Deployment":
            return {"metadata": {"name": name, "namespace": ns}, "spec": patch["spec"], "status": {}}
        return {"metadata": {"uid": "u1"}, "status": patch["status"]}

    async def create(self, obj: dict[str, Any]) -> Any:
        self.created.append(obj)
        return obj


class FakeAdmin:
    def __init__(self) -> None:
        self.lags = [0] * 6
        self.fail = False
        self.t = 1000.0

    def group_offsets(self, group: str, topic: str) -> GroupOffsets:
        if self.fail:
            raise KafkaAdminError("broker down")
        self.t += 10
        parts = tuple(PartitionOffsets(p, 0, 10_000, 10_000 - lag) for p, lag in enumerate(self.lags))
        return GroupOffsets(group, topic, parts, True, self.t)


class FakePool:
    def __init__(self, admin: FakeAdmin) -> None:
        self.admin = admin

    def get(self, bootstrap: str, options: Any) -> FakeAdmin:
        return self.admin


def setup() -> tuple[Scaler, FakeKube, FakeAdmin, Reconciler]:
    kube, admin = FakeKube(), FakeAdmin()
    rec = Reconciler(kube, OperatorSettings(scale_interval=10.0), FakePool(admin))  # type: ignore[arg-type]
    rec.store.pipelines[("ns", "p")] = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "kafka": {"bootstrapServers": "k:9092"},
            "redis": {"url": "redis://r:6379/0"},
            "evaluator": {"autoscaling": {"enabled": True, "maxReplicas": 6, "lagThreshold": 100}},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "PipelineReady"}]},
    }
    rec.store.deployments[("ns", "p-evaluator")] = {
        "metadata": {"name": "p-evaluator", "namespace": "ns"},
        "spec": {"replicas": 1},
        "status": {"availableReplicas": 1},
    }
    return Scaler(rec), kube, admin, rec


async def test_a_backlog_scales_the_deployment_and_says_so() -> None:
    scaler, kube, admin, rec = setup()
    admin.lags = [300] * 6
    decisions = await scaler.tick("ns", "p")
    assert decisions["evaluator"].replicas == 5  # ceil(1800 / 100) = 18, step limit 1 -> 5
    kinds = [(k, sub) for k, _, _, sub in kube.patches]
    assert kinds == [("Deployment", None), ("AlertPipeline", "status")]  # never the pipeline's spec
    assert kube.patches[0][2] == {"spec": {"replicas": 5}}
    status = kube.patches[1][2]["status"]
    assert (
        status["scaling"]["evaluator"]["lag"] == 1800
        and status["scaling"]["evaluator"]["desiredReplicas"] == 5
    )
    types = {c["type"]: c for c in status["conditions"]}
    assert types["Scaling"]["reason"] == "ScaledUp" and types["Ready"]["status"] == "True"
    assert rec.store.deployments[("ns", "p-evaluator")]["spec"]["replicas"] == 5
    events = [e for e in kube.created if e["kind"] == "Event"]
    assert events and events[0]["reason"] == "ScaledUp" and "evaluator: 1 -> 5" in events[0]["message"]


async def test_quiet_ticks_do_not_write_status_every_time() -> None:
    scaler, kube, admin, _ = setup()
    await scaler.tick("ns", "p")  # first: status has nothing yet, written
    writes = len(kube.patches)
    await scaler.tick("ns", "p")
    await scaler.tick("ns", "p")
    assert len(kube.patches) == writes  # Stable and nothing shown changed: memory only
    admin.fail = True
    await scaler.tick("ns", "p")  # LagUnknown shows: written at once
    assert len(kube.patches) == writes + 1
    cond = {c["type"]: c for c in kube.patches[-1][2]["status"]["conditions"]}["Scaling"]
    assert cond["status"] == "Unknown" and "broker down" in cond["message"]
    assert all(k != "Deployment" for k, *_ in kube.patches)  # replicas kept on missing data
