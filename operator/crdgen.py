"""Generate the CRDs (crds/*.yaml) from the pydantic models: ``alertpipe crds --out crds/``.

Pydantic writes JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 subset. This module
inlines ``$ref``/``$defs``, turns ``anyOf [X, null]`` into an optional X, drops ``title`` and
``additionalProperties: false`` (the apiserver prunes and ``kubectl`` rejects unknown fields), marks
free-form maps ``x-kubernetes-preserve-unknown-fields``, and adds CEL rules for the cross-field checks
the models do in Python. No library does this conversion for pydantic v2, hence the hand-written walk.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from alertpipe.operator.models import (
    GROUP,
    PIPELINE_PLURAL,
    RULE_PLURAL,
    VERSION,
    AlertPipelineSpec,
    AlertPipelineStatus,
    AlertRuleSpec,
    AlertRuleStatus,
)
from alertpipe.workers.config.models import CHANNEL_KINDS

__all__ = ["CEL_RULES", "add_arguments", "build_crds", "crd_files", "run", "structural_schema"]

JSON = dict[str, Any]

# Cross-field constraints the models check in Python, as CEL for the apiserver (keyed by $def name).
CEL_RULES: dict[str, list[JSON]] = {
    "RuleSpec": [
        {
            "rule": "[has(self.threshold), has(self.aggregate), has(self.absence)].filter(x, x).size() == 1",
            "message": "a rule must set exactly one of threshold, aggregate, absence",
        }
    ],
    "ChannelSpec": [
        {
            "rule": "[" + ", ".join(f"has(self.{k})" for k in CHANNEL_KINDS) + "].filter(x, x).size() == 1",
            "message": "a channel must set exactly one of " + ", ".join(CHANNEL_KINDS),
        }
    ],
    "RedisSpec": [
        {
            "rule": "has(self.url) != has(self.urlSecretRef)",
            "message": "redis must set exactly one of url, urlSecretRef",
        }
    ],
    "LabelSelectorRequirement": [
        {
            "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            "message": "In and NotIn need values; Exists and DoesNotExist take none",
        }
    ],
    "AutoscalingSpec": [
        {
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas)"
            " || self.minReplicas <= self.maxReplicas",
            "message": "autoscaling.minReplicas must not exceed maxReplicas",
        }
    ],
    "AlertPipelineSpec": [
        {
            "rule": "!has(self.channels) || self.channels.all(c, !has(c.fallback)"
            " || self.channels.exists(d, d.name == c.fallback))",
            "message": "a channel's fallback must name another channel of this pipeline",
            "fieldPath": ".channels",
        }
    ],
}

# Lists whose items are keyed by name: merged by key (server-side apply) and unique by key.
LIST_MAP_KEYS: dict[tuple[str, str], str] = {("AlertPipelineSpec", "channels"): "name"}


def _deref(node: JSON, defs: dict[str, JSON]) -> tuple[JSON, str | None]:
    ref = node.get("$ref")
    if ref is None and isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        ref = node["allOf"][0].get("$ref")
    if ref is None:
        return node, None
    name = str(ref).rsplit("/", 1)[-1]
    merged = copy.deepcopy(defs[name])
    for key in ("description", "default"):
        if key in node:
            merged[key] = node[key]
    return merged, name


def _convert(node: JSON, defs: dict[str, JSON], def_name: str | None = None) -> JSON:
    node, ref_name = _deref(node, defs)
    if ref_name is not None:
        def_name = ref_name
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        rest = [n for n in any_of if n.get("type") != "null"]
        if len(rest) != 1:
            raise ValueError(f"cannot express anyOf with {len(rest)} non-null branches structurally")
        inner = {k: v for k, v in node.items() if k != "anyOf"}
        branch, branch_name = _deref(rest[0], defs)
        merged = {**branch, **{k: v for k, v in inner.items() if k in ("description",)}}
        if inner.get("default") is not None:
            merged["default"] = inner["default"]
        return _convert(merged, defs, branch_name)

    out: JSON = {}
    for key in (
        "description",
        "type",
        "format",
        "pattern",
        "enum",
        "minimum",
        "maximum",
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "default",
    ):
        if key in node and not (key == "default" and node[key] is None):
            out[key] = node[key]
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "enum" in out and "type" not in out:
        out["type"] = "string"

    typ = node.get("type")
    if typ == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties")
        if props:
            out["properties"] = {}
            for k, v in props.items():
                out["properties"][k] = _convert(v, defs)
                map_key = LIST_MAP_KEYS.get((def_name or "", k))
                if map_key is not None:
                    out["properties"][k]["x-kubernetes-list-type"] = "map"
                    out["properties"][k]["x-kubernetes-list-map-keys"] = [map_key]
            required = [r for r in node.get("required", []) if r in props]
            if required:
                out["required"] = required
        else:
            extra = node.get("additionalProperties", True)
            if extra is True or extra == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(extra, dict):
                out["additionalProperties"] = _convert(extra, defs)
        if def_name and def_name in CEL_RULES:
            out["x-kubernetes-validations"] = copy.deepcopy(CEL_RULES[def_name])
    elif typ == "array":
        out["items"] = _convert(node.get("items", {}), defs)
    elif typ is None and "enum" not in out:
        # Any: a free-form value.
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


class _FactoryDefaults(GenerateJsonSchema):
    """Also writes the defaults that a ``default_factory`` makes for a nested model (pydantic leaves
    them out), so the apiserver fills in an omitted object exactly as the model does: the stored
    spec is what Git holds plus defaults, field for field (Argo CD's diff shows no noise, and
    ``kubectl get -o yaml`` shows the values the operator runs with). Empty lists and maps stay out:
    absent and empty mean the same."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        if not isinstance(value, BaseModel):
            return NoDefault
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)


def structural_schema(model: type[BaseModel], factory_defaults: bool = False) -> JSON:
    """The structural OpenAPI v3 schema of ``model`` (camelCase names, every $ref inlined); with
    ``factory_defaults``, nested models made by a default_factory get their default too (specs)."""
    generator = _FactoryDefaults if factory_defaults else GenerateJsonSchema
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=generator)
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, model.__name__)


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[JSON],
    description: str,
) -> JSON:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "alertpipe"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["alertpipe"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": structural_schema(spec, factory_defaults=True),
                                "status": structural_schema(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def _condition_column(name: str, type_: str) -> JSON:
    return {"name": name, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status'}


def build_crds() -> dict[str, JSON]:
    """File name → CRD document, for every kind."""
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    pipeline = _crd(
        "AlertPipeline",
        PIPELINE_PLURAL,
        "ap",
        AlertPipelineSpec,
        AlertPipelineStatus,
        [
            _condition_column("Ready", "Ready"),
            {"name": "Rules", "type": "integer", "jsonPath": ".status.rules.valid"},
            {"name": "Evaluators", "type": "integer", "jsonPath": ".status.replicas.evaluator.available"},
            {"name": "Deliverers", "type": "integer", "jsonPath": ".status.replicas.deliverer.available"},
            {"name": "Lag", "type": "integer", "jsonPath": ".status.scaling.evaluator.lag"},
            {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
            {"name": "Canary", "type": "string", "jsonPath": ".status.canary.phase"},
            {"name": "SLO", "type": "string", "jsonPath": ".status.slo.met"},
            age,
        ],
        "A tenant's real-time alert pipeline: Kafka topics, a compiled config and worker Deployments.",
    )
    rule = _crd(
        "AlertRule",
        RULE_PLURAL,
        "ar",
        AlertRuleSpec,
        AlertRuleStatus,
        [
            _condition_column("Valid", "Valid"),
            {"name": "Severity", "type": "string", "jsonPath": ".spec.severity"},
            {"name": "Pipeline", "type": "string", "jsonPath": ".status.pipelines"},
            age,
        ],
        "What fires, for how long, and who is told; selected by AlertPipelines through labels.",
    )
    return {f"{GROUP}_{PIPELINE_PLURAL}.yaml": pipeline, f"{GROUP}_{RULE_PLURAL}.yaml": rule}


def crd_files() -> dict[str, str]:
    """File name → YAML text, exactly as written to crds/."""
    header = "# Generated by `alertpipe crds --out crds/` from alertpipe.operator.models. Do not edit.\n"
    return {
        name: header + yaml.safe_dump(doc, sort_keys=False, width=110) for name, doc in build_crds().items()
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="directory to write into (default: stdout)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the files in --out differ from the models"
    )


def run(args: argparse.Namespace) -> int:
    files = crd_files()
    if args.out is None:
        print("---\n".join(files.values()), end="")
        return 0
    out: Path = args.out
    if args.check:
        stale = [n for n, t in files.items() if not (out / n).exists() or (out / n).read_text() != t]
        for name in stale:
            print(f"{out / name}: differs from the models; run `alertpipe crds --out {out}`")
        return 1 if stale else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0
