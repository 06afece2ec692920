# mypy: disable-error-code="union-attr, index, arg-type"
"""The operator's own scaling engine against the real apiserver and Kafka (no worker pods): replicas
start at minReplicas, follow a change of the bounds at once, a kill switch pins the evaluator at 0
and says so, and a restarted operator keeps what the scaler decided."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devstack.pipeline import wait_for

from .conftest import OperatorProcess
from .helpers import Cluster, pipeline_body

pytestmark = pytest.mark.integration

AUTO = {"enabled": True, "minReplicas": 2, "maxReplicas": 4, "lagThreshold": 100}


def replicas(k: Cluster) -> int:
    return int(k.apps.read_namespaced_deployment("sp-evaluator", k.ns).spec.replicas or 0)


def scaling(k: Cluster) -> dict[str, Any]:
    return ((k.get("alertpipelines", "sp").get("status") or {}).get("scaling") or {}).get("evaluator") or {}


def test_bounds_kill_switch_and_restart(
    k: Cluster, operator_factory: Callable[..., OperatorProcess], kafka_bootstrap: str
) -> None:
    op = operator_factory("--scale-interval", "1")
    k.create(pipeline_body("sp", kafka_bootstrap, evaluator={"replicas": 1, "autoscaling": AUTO}))
    wait_for(lambda: scaling(k).get("lag") == 0, "the scaler observing lag 0 (empty topic)", 60)
    assert replicas(k) == 2  # minReplicas, not spec.replicas
    cond = k.condition("alertpipelines", "sp", "Scaling")
    assert cond is not None and cond["status"] == "True" and cond["reason"] == "Stable"

    k.patch_spec("alertpipelines", "sp", {"evaluator": {"autoscaling": {**AUTO, "minReplicas": 3}}})
    wait_for(lambda: replicas(k) == 3, "replicas raised to the new minReplicas", 30)

    k.patch_spec("alertpipelines", "sp", {"killSwitches": {"stopEvaluation": {"reason": "INC-7"}}})
    wait_for(lambda: replicas(k) == 0, "the evaluator pinned at 0", 30)

    def pinned() -> bool:
        c = k.condition("alertpipelines", "sp", "Scaling")
        return (
            c is not None
            and (c["status"], c["reason"]) == ("False", "KillSwitch")
            and "INC-7" in c["message"]
        )

    wait_for(pinned, "Scaling=False KillSwitch naming the switch", 30)
    k.patch_spec("alertpipelines", "sp", {"killSwitches": {"stopEvaluation": None}})
    wait_for(lambda: replicas(k) == 3, "back to minReplicas when the switch goes", 30)

    before = scaling(k)
    op.stop()
    op.start()
    wait_for(
        lambda: scaling(k).get("observedAt", 0) > before.get("observedAt", 0), "the restarted scaler", 60
    )
    assert replicas(k) == 3
    after = scaling(k)
    assert after.get("lastScaleTime") == before.get("lastScaleTime") and after["desiredReplicas"] == 3
    assert k.events("ScaledDown") == [] and k.events("ScaledUp") == []  # the reconcile moved them, not lag
