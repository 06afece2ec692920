"""The KEDA engine's ScaledObject: the workers' group and topic, the spec's thresholds and behaviour."""

from __future__ import annotations

import pytest

from alertpipe.operator.decisions.keda import (
    PAUSED_REPLICAS,
    desired_scaled_object,
    desired_trigger_authentication,
)
from alertpipe.operator.decisions.validation import validate_pipeline_spec
from alertpipe.operator.decisions.workloads import Owner
from alertpipe.operator.models import AlertPipelineSpec

pytestmark = pytest.mark.unit
OWNER = Owner("ns", "p", "uid-1")


def spec(**kafka: object) -> AlertPipelineSpec:
    raw = {
        "kafka": {"bootstrapServers": "k:9092", **kafka},
        "redis": {"url": "redis://r:6379/0"},
        "evaluator": {"autoscaling": {"enabled": True, "engine": "keda", "minReplicas": 0, "maxReplicas": 6,
                                      "lagThreshold": 250, "activationLag": 10,
                                      "scaleDown": {"stabilizationWindowSeconds": 60, "policies": [
                                          {"type": "Pods", "value": 1, "periodSeconds": 30}]}}},
    }  # fmt: skip
    parsed, errors = validate_pipeline_spec(raw)
    assert parsed is not None, errors
    return parsed


def test_scaled_object_carries_the_trigger_and_hpa_behaviour() -> None:
    s = spec()
    so = desired_scaled_object(
        OWNER, "evaluator", s, s.evaluator.autoscaling, "grp", "ev", "earliest", 10, False
    )
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    body = so["spec"]
    assert body["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "p-evaluator"}
    assert (body["minReplicaCount"], body["maxReplicaCount"], body["pollingInterval"]) == (0, 6, 10)
    trigger = body["triggers"][0]
    assert trigger["type"] == "kafka" and "authenticationRef" not in trigger
    assert trigger["metadata"] == {
        "bootstrapServers": "k:9092", "consumerGroup": "grp", "topic": "ev", "lagThreshold": "250",
        "activationLagThreshold": "10", "offsetResetPolicy": "earliest", "allowIdleConsumers": "false",
    }  # fmt: skip
    behavior = body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"] == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
    }
    assert PAUSED_REPLICAS not in so["metadata"].get("annotations", {})


def test_a_kill_switch_pauses_at_zero() -> None:
    s = spec()
    so = desired_scaled_object(OWNER, "evaluator", s, s.evaluator.autoscaling, "g", "t", "earliest", 10, True)
    assert so["metadata"]["annotations"][PAUSED_REPLICAS] == "0"


def test_credentials_go_through_a_trigger_authentication() -> None:
    s = spec(
        credentialsSecretRef={"name": "kafka-creds", "key": "sasl.username"},
        clientOptions={"sasl.mechanism": "SCRAM-SHA-256"},
    )
    so = desired_scaled_object(
        OWNER, "evaluator", s, s.evaluator.autoscaling, "g", "t", "earliest", 10, False
    )
    trigger = so["spec"]["triggers"][0]
    assert trigger["authenticationRef"] == {"name": "p-kafka"}
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha256", "enable")
    auth = desired_trigger_authentication(OWNER, s)
    assert auth is not None and {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {
        "username",
        "password",
    }
    assert desired_trigger_authentication(OWNER, spec()) is None
