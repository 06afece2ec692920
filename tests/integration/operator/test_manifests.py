# ruff: noqa: E501
# mypy: disable-error-code="no-any-return, arg-type, index"
"""Broken manifests are rejected by the real apiserver (CRD schema + CEL) with a message naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client

pytestmark = pytest.mark.integration

G, V = "alertpipe.io", "v1alpha1"

PIPELINE: dict[str, Any] = {
    "apiVersion": f"{G}/{V}",
    "kind": "AlertPipeline",
    "metadata": {"name": "p"},
    "spec": {
        "kafka": {"bootstrapServers": "127.0.0.1:9092"},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "channels": [{"name": "ops", "webhook": {"url": "http://127.0.0.1:9/h"}}],
    },
}
RULE: dict[str, Any] = {
    "apiVersion": f"{G}/{V}",
    "kind": "AlertRule",
    "metadata": {"name": "r"},
    "spec": {"threshold": {"condition": "value > 1"}, "channels": ["ops"]},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    node = doc
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is _DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return doc


_DELETE = object()

BROKEN = [
    ("wrong type", PIPELINE, "spec.evaluator", {"replicas": "three"}, "spec.evaluator.replicas"),
    ("negative replicas", PIPELINE, "spec.deliverer", {"replicas": -1}, "spec.deliverer.replicas"),
    ("unknown field", PIPELINE, "spec.kafkaa", {}, 'unknown field "spec.kafkaa"'),
    ("bad duration", PIPELINE, "spec.allowedLateness", "5 seconds", "spec.allowedLateness"),
    (
        "two channel kinds",
        PIPELINE,
        "spec.channels",
        [
            {
                "name": "x",
                "webhook": {"url": "http://a"},
                "slack": {"webhookUrlSecretRef": {"name": "s", "key": "k"}},
            }
        ],
        "exactly one of webhook, slack, pagerduty, email, sms, push",
    ),
    (
        "channel without name",
        PIPELINE,
        "spec.channels",
        [{"webhook": {"url": "http://a"}}],
        "spec.channels[0].name",
    ),
    (
        "fallback to a missing channel",
        PIPELINE,
        "spec.channels",
        [{"name": "a", "webhook": {"url": "http://a"}, "fallback": "nope"}],
        "fallback must name another channel",
    ),
    (
        "redis url and secret",
        PIPELINE,
        "spec.redis",
        {"url": "redis://a", "urlSecretRef": {"name": "s", "key": "k"}},
        "exactly one of url, urlSecretRef",
    ),
    ("bad deletionPolicy", PIPELINE, "spec.deletionPolicy", "Sometimes", "spec.deletionPolicy"),
    (
        "rule with two kinds",
        RULE,
        "spec.absence",
        {"for": "1m"},
        "exactly one of threshold, aggregate, absence",
    ),
    ("rule bad severity", RULE, "spec.severity", "urgent", "spec.severity"),
    ("rule bad window", RULE, "spec.threshold", _DELETE, "exactly one of threshold"),
    ("rule bad for", RULE, "spec.for", "10 minutes", "spec.for"),
    ("rule bad channel name", RULE, "spec.channels", ["Not_A_Name"], "spec.channels[0]"),
]


@pytest.mark.parametrize(("what", "base", "path", "value", "words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_apiserver_rejects_broken_manifest(
    api: client.ApiClient,
    crds: list[str],
    namespace: str,
    what: str,
    base: dict[str, Any],
    path: str,
    value: Any,
    words: str,
) -> None:
    co = client.CustomObjectsApi(api)
    plural = "alertpipelines" if base["kind"] == "AlertPipeline" else "alertrules"
    body = _with(base, path, value)
    with pytest.raises(client.ApiException) as err:
        co.create_namespaced_custom_object(G, V, namespace, plural, body, field_validation="Strict")
    assert err.value.status in (400, 422), err.value.body
    message = json.loads(err.value.body)["message"]
    assert words in message, message


def test_the_valid_manifests_are_accepted(api: client.ApiClient, crds: list[str], namespace: str) -> None:
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(G, V, namespace, "alertpipelines", PIPELINE, field_validation="Strict")
    got = co.create_namespaced_custom_object(G, V, namespace, "alertrules", RULE, field_validation="Strict")
    assert got["spec"]["severity"] == "warning"  # defaults from the models reach the apiserver
