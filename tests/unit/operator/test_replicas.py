"""Who owns replicas: the spec, or the scaler; the reconcile keeps what a scaler set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from alertpipe.operator.decisions.replicas import operator_scaled, reconciled_replicas
from alertpipe.operator.decisions.validation import errors_text, validate_pipeline_spec
from alertpipe.operator.decisions.workloads import DESIRED_HASH, Owner, desired_objects, needs_update
from alertpipe.operator.models import AlertPipelineSpec

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = Owner("ns", "p", "uid-1")


def spec(**evaluator: Any) -> AlertPipelineSpec:
    raw = {
        "kafka": {"bootstrapServers": "k:9092"},
        "redis": {"url": "redis://r:6379/0"},
        "evaluator": evaluator,
    }
    parsed, errors = validate_pipeline_spec(raw)
    assert parsed is not None, errors
    return parsed


ON = {"enabled": True, "minReplicas": 2, "maxReplicas": 5}


def test_min_above_max_is_refused_with_the_field_path() -> None:
    raw = {"kafka": {"bootstrapServers": "k:9092"}, "redis": {"url": "redis://r:6379/0"},
           "deliverer": {"autoscaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 2}}}  # fmt: skip
    parsed, errors = validate_pipeline_spec(raw)
    assert parsed is None
    assert "deliverer.autoscaling" in errors_text(errors) and "must not exceed maxReplicas" in errors_text(
        errors
    )


def test_spec_replicas_rule_when_autoscaling_is_off() -> None:
    s = spec(replicas=3)
    assert operator_scaled(s) == [] and reconciled_replicas(s, "evaluator", 7, NOW) is None


@pytest.mark.parametrize(("live", "want"), [(None, 2), (1, 2), (4, 4), (9, 5)])
def test_autoscaled_role_keeps_the_live_replicas_within_bounds(live: int | None, want: int) -> None:
    assert reconciled_replicas(spec(autoscaling=ON), "evaluator", live, NOW) == want


def test_stop_evaluation_pins_the_autoscaled_evaluator_at_zero() -> None:
    s = spec(autoscaling=ON).model_copy(deep=True)
    raw = s.model_dump(by_alias=True, exclude_none=True)
    raw["killSwitches"] = {"stopEvaluation": {"reason": "incident 42"}}
    pinned = AlertPipelineSpec.model_validate(raw)
    assert reconciled_replicas(pinned, "evaluator", 4, NOW) == 0


def test_keda_engine_leaves_replicas_to_the_hpa() -> None:
    s = spec(autoscaling={**ON, "engine": "keda"})
    assert operator_scaled(s) == [] and reconciled_replicas(s, "evaluator", 9, NOW) == 9


def test_a_scaler_change_of_replicas_is_not_a_spec_change() -> None:
    s = spec(autoscaling=ON)

    def deployment(n: int) -> dict[str, Any]:
        objs = desired_objects(OWNER, s, "img:1", {}, scaled_replicas={"evaluator": n})
        return next(o for o in objs if o["metadata"]["name"] == "p-evaluator")

    three, four = deployment(3), deployment(4)
    assert three["spec"]["replicas"] == 3 and four["spec"]["replicas"] == 4
    assert three["metadata"]["annotations"][DESIRED_HASH] == four["metadata"]["annotations"][DESIRED_HASH]
    assert not needs_update(four, four) and needs_update(three, four)
