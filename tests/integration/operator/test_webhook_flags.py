# mypy: disable-error-code="union-attr, index, arg-type"
# ruff: noqa: E501
"""`alertpipe operator --webhook-port P` works on the devstack with nothing else to pass: the devstack's
certificate (ALERTPIPE_WEBHOOK_CERT_DIR, as `devstack env` exports it) serves HTTPS, and a
--webhook-manage name the flag check accepts is one the real apiserver accepts too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devstack.pipeline import wait_for
from devstack.processes import free_port
from devstack.webhookcert import make_webhook_cert

from .helpers import BAD, Cluster, G, V, rule_body

pytestmark = pytest.mark.integration


def test_managed_webhook_with_the_devstack_certificate(
    api: client.ApiClient, k: Cluster, operator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTPIPE_WEBHOOK_CERT_DIR", str(make_webhook_cert(tmp_path / "webhook-cert")))
    name = f"{k.ns}.alertpipe.io"  # two segments of our own: the webhooks get three or more
    adm = client.AdmissionregistrationV1Api(api)
    port = free_port()
    try:
        operator_factory("--webhook-port", str(port), "--webhook-addr", "127.0.0.1", "--webhook-host", "127.0.0.1",
                         "--webhook-manage", name)  # fmt: skip

        def configured() -> Any:
            try:  # Kopf creates it, then patches its webhooks in
                vwc = adm.read_validating_webhook_configuration(name)
                return vwc if vwc.webhooks else None
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        vwc = wait_for(configured, "the operator's ValidatingWebhookConfiguration", 60)
        assert sorted(w.name for w in vwc.webhooks) == [f"validate-alertpipeline.{name}", f"validate-alertrule.{name}"]

        def refused() -> str:
            try:
                k.co.create_namespaced_custom_object(G, V, k.ns, "alertrules", rule_body("probe", BAD), dry_run="All")
            except client.ApiException as exc:
                msg = str(json.loads(exc.body)["message"])
                return msg if "admission webhook" in msg else ""
            return ""

        msg = wait_for(refused, "the apiserver calling the webhook over the devstack's certificate", 60, every=0.2)
        assert "spec.threshold.condition" in msg, msg
    finally:
        try:
            adm.delete_validating_webhook_configuration(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
