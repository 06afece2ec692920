# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, return-value, misc, unused-ignore"
"""Manifests and a small client wrapper shared by the operator's integration tests."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

G, V = "alertpipe.io", "v1alpha1"


def pipeline_body(name: str, bootstrap: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kafka": {
            "bootstrapServers": bootstrap,
            "topics": {"events": {"partitions": 3}, "alerts": {"partitions": 2}},
        },
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "channels": [{"name": "ops", "webhook": {"url": "http://127.0.0.1:9/hook"}}],
        "ruleSelector": {"matchLabels": {"team": "a"}},
        "evaluator": {"replicas": 2},
    }
    base.update(spec)
    return {"apiVersion": f"{G}/{V}", "kind": "AlertPipeline", "metadata": {"name": name}, "spec": base}


def rule_body(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "AlertRule",
        "metadata": {"name": name, "labels": labels if labels is not None else {"team": "a"}},
        "spec": spec,
    }


GOOD = {"threshold": {"condition": "value > 80"}, "channels": ["ops"], "severity": "critical"}
GOOD2 = {
    "aggregate": {"fn": "avg", "field": "value", "window": "1m", "condition": "value > 75"},
    "channels": ["ops"],
}
BAD = {"threshold": {"condition": "value >"}, "channels": ["ops"]}


class Cluster:
    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.ns = ns
        self.co = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        plural = "alertpipelines" if body["kind"] == "AlertPipeline" else "alertrules"
        return self.co.create_namespaced_custom_object(G, V, self.ns, plural, body)  # type: ignore[no-any-return]

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.co.get_namespaced_custom_object(G, V, self.ns, plural, name)  # type: ignore[no-any-return]

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.co.patch_namespaced_custom_object(G, V, self.ns, plural, name, {"spec": spec})

    def condition(self, plural: str, name: str, type_: str) -> dict[str, Any] | None:
        conds = self.get(plural, name).get("status", {}).get("conditions") or []
        return next((c for c in conds if c["type"] == type_), None)

    def config(self, pipeline: str) -> dict[str, Any] | None:
        try:
            cm = self.core.read_namespaced_config_map(f"{pipeline}-config", self.ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(cm.data["config.json"])  # type: ignore[no-any-return]

    def events(self, reason: str) -> list[str]:
        return [e.message for e in self.core.list_namespaced_event(self.ns).items if e.reason == reason]

    def resource_versions(self, pipeline: str) -> dict[str, str]:
        out = {}
        sel = f"alertpipe.io/pipeline={pipeline}"
        for d in self.apps.list_namespaced_deployment(self.ns, label_selector=sel).items:
            out[f"deploy/{d.metadata.name}"] = d.metadata.resource_version
        for kind, lister in (
            ("cm", self.core.list_namespaced_config_map),
            ("svc", self.core.list_namespaced_service),
            ("sa", self.core.list_namespaced_service_account),
        ):
            for o in lister(self.ns, label_selector=sel).items:
                out[f"{kind}/{o.metadata.name}"] = o.metadata.resource_version
        out["pipeline"] = self.get("alertpipelines", pipeline)["metadata"]["resourceVersion"]
        for r in self.co.list_namespaced_custom_object(G, V, self.ns, "alertrules")["items"]:
            out[f"rule/{r['metadata']['name']}"] = r["metadata"]["resourceVersion"]
        return out
