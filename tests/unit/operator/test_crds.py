"""The CRDs in crds/ are exactly what the models generate, and the schemas are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from alertpipe.operator.crdgen import build_crds, crd_files, structural_schema
from alertpipe.workers.config.models import RuleSpec

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def test_crds_folder_matches_the_models() -> None:
    for name, text in crd_files().items():
        path = ROOT / "crds" / name
        assert path.exists(), f"{path} missing: run `alertpipe crds --out crds/`"
        assert path.read_text() == text, f"{path} drifted from the models: run `alertpipe crds --out crds/`"


def _walk(node: Any, path: str = "") -> list[str]:
    """Structural-schema violations under ``node``."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const"):
            if key in node:
                bad.append(f"{path}: {key}")
        if "properties" in node and "additionalProperties" in node:
            bad.append(f"{path}: properties with additionalProperties")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            bad.append(f"{path}: no type")
        for k, v in node.get("properties", {}).items():
            bad += _walk(v, f"{path}.{k}")
        if "items" in node:
            bad += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            bad += _walk(node["additionalProperties"], f"{path}{{}}")
    return bad


@pytest.mark.parametrize("name", sorted(build_crds()))
def test_schema_is_structural(name: str) -> None:
    crd = build_crds()[name]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    # round-trips through YAML unchanged
    assert yaml.safe_load(yaml.safe_dump(crd)) == crd


def test_rule_spec_is_reused_and_carries_cel() -> None:
    rule = build_crds()["alertpipe.io_alertrules.yaml"]
    spec = rule["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec == structural_schema(RuleSpec, factory_defaults=True)
    assert set(spec["properties"]) >= {"threshold", "aggregate", "absence", "for", "channels", "severity"}
    assert "exactly one of threshold, aggregate, absence" in spec["x-kubernetes-validations"][0]["message"]
    assert spec["properties"]["severity"]["enum"] == ["critical", "warning", "info"]
    assert spec["properties"]["for"]["pattern"].startswith("^(")
    events = spec["properties"]["tests"]["items"]["properties"]["events"]["items"]
    assert events == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_pipeline_crd_names_columns_and_validations() -> None:
    crd = build_crds()["alertpipe.io_alertpipelines.yaml"]
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["ap"] and names["categories"] == ["alertpipe"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Rules",
        "Evaluators",
        "Deliverers",
        "Lag",
        "Revision",
        "Canary",
        "SLO",
        "Age",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    channels = spec["properties"]["channels"]
    assert channels["x-kubernetes-list-type"] == "map"
    assert "exactly one of webhook" in channels["items"]["x-kubernetes-validations"][0]["message"]
    assert spec["properties"]["deletionPolicy"]["enum"] == ["Retain", "Delete"]
    assert spec["properties"]["deletionPolicy"]["default"] == "Retain"
    assert spec["properties"]["evaluator"]["properties"]["replicas"]["minimum"] == 0
    assert (
        spec["properties"]["redis"]["x-kubernetes-validations"][0]["rule"]
        == "has(self.url) != has(self.urlSecretRef)"
    )
    rate = channels["items"]["properties"]["rateLimitPerSecond"]
    assert rate["exclusiveMinimum"] is True and rate["minimum"] == 0


@pytest.mark.parametrize("role", ["evaluator", "deliverer"])
def test_autoscaling_schema_has_cel_and_hpa_behavior(role: str) -> None:
    crd = build_crds()["alertpipe.io_alertpipelines.yaml"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    auto = schema["properties"]["spec"]["properties"][role]["properties"]["autoscaling"]
    assert "minReplicas <= self.maxReplicas" in auto["x-kubernetes-validations"][0]["rule"]
    assert auto["properties"]["engine"]["enum"] == ["operator", "keda"]
    policy = auto["properties"]["scaleUp"]["properties"]["policies"]["items"]
    assert policy["properties"]["type"]["enum"] == ["Pods", "Percent"]
    assert set(policy["required"]) == {"type", "value", "periodSeconds"}
    status = schema["properties"]["status"]["properties"]["scaling"]["additionalProperties"]
    fields = {"lag", "arrivalRate", "serviceRatePerReplica", "desiredReplicas", "reason", "lastScaleTime"}
    assert fields <= set(status["properties"])
    assert "autoscaling" not in schema["properties"]["spec"]["properties"]["ingestor"]["properties"]


def test_objects_a_default_factory_makes_are_defaulted_by_the_schema_too() -> None:
    """An omitted nested object is filled in by the apiserver exactly as the model fills it in."""
    crd = build_crds()["alertpipe.io_alertpipelines.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    topics = spec["kafka"]["properties"]["topics"]["properties"]
    assert topics["late"]["default"] == {"partitions": 1, "retention": "7d"}
    assert topics["deadLetter"]["default"] == {"partitions": 1, "retention": "30d"}
    autoscaling = spec["evaluator"]["properties"]["autoscaling"]
    assert autoscaling["default"]["enabled"] is False and autoscaling["default"]["maxReplicas"] == 10
    assert "default" not in spec["channels"]  # an empty list is the same as none: not written
    assert "default" not in spec["rollout"]  # optional (None): stays absent
