# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, arg-type, no-any-return"
"""The admission webhook: the real apiserver calls the operator (self-signed CA, 127.0.0.1) and
rejects a broken AlertRule at apply time with the field path; the valid rules go live."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from alertpipe.operator.decisions.validation import validate_rule
from alertpipe.operator.models import AlertPipelineSpec
from devstack.pipeline import wait_for
from devstack.processes import free_port

from .helpers import BAD, GOOD, GOOD2, Cluster, pipeline_body, rule_body

pytestmark = pytest.mark.integration

G, V = "alertpipe.io", "v1alpha1"


def make_certs(folder: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 (files named as a TLS Secret mounts them)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=alertpipe-test-ca",
        "-days",
        "1",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )


@pytest.fixture
def webhook(api: client.ApiClient, namespace: str, tmp_path: Path, operator_factory: Any) -> Iterator[int]:
    certs = tmp_path / "certs"
    make_certs(certs)
    port = free_port()
    operator_factory(
        "--webhook-port", str(port), "--webhook-addr", "127.0.0.1", "--webhook-cert-dir", str(certs)
    )
    ca = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
    adm = client.AdmissionregistrationV1Api(api)
    name = f"alertpipe-test-{namespace}"

    def hook(resource: str, handler: str) -> dict[str, Any]:
        return {
            "name": f"{resource}.{namespace}.alertpipe.io",
            "clientConfig": {"url": f"https://127.0.0.1:{port}/{handler}", "caBundle": ca},
            "rules": [
                {
                    "apiGroups": [G],
                    "apiVersions": [V],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }

    adm.create_validating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                hook("alertrules", "validate-alertrule"),
                hook("alertpipelines", "validate-alertpipeline"),
            ],
        }
    )
    try:
        yield port
    finally:
        adm.delete_validating_webhook_configuration(name)


def rejection(fn: Any) -> str:
    with pytest.raises(client.ApiException) as err:
        fn()
    assert err.value.status in (400, 422), err.value.body
    return str(json.loads(err.value.body)["message"])


def test_webhook_rejects_broken_rules_at_apply(k: Cluster, webhook: int, kafka_bootstrap: str) -> None:
    # The apiserver picks the configuration up asynchronously: wait until a dry-run is judged by it.
    def webhook_active() -> bool:
        try:
            k.co.create_namespaced_custom_object(
                G, V, k.ns, "alertrules", rule_body("probe", BAD), dry_run="All"
            )
        except client.ApiException as exc:
            return "admission webhook" in json.loads(exc.body)["message"]
        return False

    wait_for(webhook_active, "the apiserver calling the webhook", 30, every=0.2)

    k.create(pipeline_body("w", kafka_bootstrap))
    wait_for(lambda: k.config("w"), "config", 60)
    k.create(rule_body("good-a", GOOD))
    k.create(rule_body("good-b", GOOD2))

    msg = rejection(lambda: k.create(rule_body("broken", BAD)))
    # the same words the rule's Valid condition carries when no webhook is installed
    expected = validate_rule(
        "broken",
        BAD,
        list(AlertPipelineSpec.model_validate(pipeline_body("w", kafka_bootstrap)["spec"]).channels),
    )
    assert f"AlertRule broken: {expected.message}" in msg, msg
    assert "spec.threshold.condition: " in expected.message
    msg = rejection(lambda: k.create(rule_body("wrong-channel", {**GOOD, "channels": ["nobody"]})))
    assert "spec.channels[0]" in msg and "nobody" in msg, msg
    # an edit that breaks a stored rule is refused too
    msg = rejection(lambda: k.patch_spec("alertrules", "good-a", {"threshold": {"condition": "value >>> 3"}}))
    assert "spec.threshold.condition" in msg, msg
    # pipeline specs the CRD schema cannot judge (a muted channel that does not exist)
    msg = rejection(
        lambda: k.patch_spec(
            "alertpipelines", "w", {"killSwitches": {"mutedChannels": [{"name": "ghost", "reason": "x"}]}}
        )
    )
    assert "unknown channel 'ghost'" in msg, msg

    wait_for(
        lambda: sorted(r["name"] for r in (k.config("w") or {}).get("rules", [])) == ["good-a", "good-b"],
        "the valid rules live",
        30,
    )
    names = [
        r["metadata"]["name"] for r in k.co.list_namespaced_custom_object(G, V, k.ns, "alertrules")["items"]
    ]
    assert sorted(names) == ["good-a", "good-b"]

    # spec.schema: a compatible first version is taken; an update that breaks old events is refused
    # with the field that breaks it; a rule reading a field the schema lacks is refused at apply
    v1 = {"types": [{"type": "temp", "version": 1, "jsonSchema": {"type": "object", "properties": {"value": {"type": "number"}}}}]}
    k.patch_spec("alertpipelines", "w", {"schema": v1})
    breaking = {"types": [{"type": "temp", "version": 2, "jsonSchema": {"type": "object", "required": ["unit"], "properties": {"value": {"type": "number"}}}}]}
    msg = rejection(lambda: k.patch_spec("alertpipelines", "w", {"schema": breaking}))
    assert "incompatible schema change" in msg and "spec.schema.types[0].jsonSchema.required" in msg, msg
    typo = {"select": {"types": ["temp"]}, "threshold": {"condition": "valeu > 3"}, "channels": ["ops"]}
    msg = rejection(lambda: k.create(rule_body("typo", typo)))
    assert "field 'valeu' is not in the event schema (temp v1)" in msg and "AlertPipeline w" in msg, msg

    # a valid but risky spec is taken, with an admission warning kubectl prints as "Warning: ..."
    _, _, headers = k.co.patch_namespaced_custom_object_with_http_info(
        G, V, k.ns, "alertpipelines", "w", {"spec": {"idleTimeout": "4s"}}
    )
    warning = headers.get("Warning") or ""
    assert "spec.idleTimeout: 4s is shorter than a Kafka leader failover" in warning, headers
    assert k.get("alertpipelines", "w")["spec"]["idleTimeout"] == "4s"
    # spec.lookups.tables: a rule reading another table is refused, naming the pipeline; a bad
    # lookup() call is refused with its field path; one reading a declared table is taken
    k.patch_spec("alertpipelines", "w", {"lookups": {"ttl": "10s", "tables": ["thresholds"]}})
    wait_for(lambda: (k.config("w") or {}).get("lookups", {}).get("tables") == ["thresholds"],
             "spec.lookups in the config", 30)
    other = {"select": {"types": ["temp"]}, "threshold": {"condition": "value > lookup('limits', deviceId).max"},
             "channels": ["ops"]}
    msg = rejection(lambda: k.create(rule_body("other-table", other)))
    assert "table 'limits' is not declared in the pipeline's spec.lookups.tables" in msg, msg
    assert "AlertPipeline w" in msg, msg
    shape = {**other, "threshold": {"condition": "value > lookup(thresholds, deviceId).max"}}
    msg = rejection(lambda: k.create(rule_body("bad-lookup", shape)))
    assert "spec.threshold.condition: lookup() needs the table as a string literal" in msg, msg
    k.create(rule_body("per-device", {**other, "threshold": {
        "condition": "value > lookup('thresholds', deviceId).max"}}))
    wait_for(lambda: "per-device" in [r["name"] for r in (k.config("w") or {}).get("rules", [])],
             "the lookup rule live", 30)
