"""Where worker pods run: nodeSelector and tolerations per role reach the Deployments' pod specs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from alertpipe.operator.decisions.workloads import Owner, desired_objects
from alertpipe.operator.models import AlertPipelineSpec

pytestmark = pytest.mark.unit
OWNER = Owner(namespace="acme", name="edge", uid="u-1")


def spec(**roles: Any) -> AlertPipelineSpec:
    return AlertPipelineSpec.model_validate(
        {
            "kafka": {"bootstrapServers": "127.0.0.1:9092"},
            "redis": {"url": "redis://127.0.0.1:6379/0"},
            **roles,
        }
    )


def pod_specs(s: AlertPipelineSpec) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in desired_objects(OWNER, s, "img:1", {})
        if o["kind"] == "Deployment"
    }


def test_node_selector_and_tolerations_reach_only_their_role() -> None:
    s = spec(
        evaluator={
            "nodeSelector": {"pool": "stream"},
            "tolerations": [{"key": "dedicated", "value": "stream", "effect": "NoSchedule"}],
        }
    )
    pods = pod_specs(s)
    evaluator = next(p for n, p in pods.items() if n.endswith("evaluator"))
    assert evaluator["nodeSelector"] == {"pool": "stream"}
    assert evaluator["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "stream", "effect": "NoSchedule"}
    ]
    others = [p for n, p in pods.items() if not n.endswith("evaluator")]
    assert others and all("nodeSelector" not in p and "tolerations" not in p for p in others)


def test_bad_toleration_is_rejected_with_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        spec(deliverer={"tolerations": [{"key": "x", "effect": "Sometimes"}]})
    assert "deliverer.tolerations.0.effect" in str(exc.value).replace("\n", " ").replace(" ", ".")
