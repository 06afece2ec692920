"""The chart and the operator agree: the rendered command line parses with `alertpipe operator`'s own
parser, the worker image reaches its --image, and the webhook paths are its handler ids."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from alertpipe import cli
from alertpipe.operator import cli as operator_cli
from alertpipe.operator import handlers
from tests.integration.tooling.helm import one, template

pytestmark = [pytest.mark.integration, pytest.mark.tooling]  # runs `helm template`


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"replicaCount": 2, "operator": {"watchNamespaces": ["team-a", "team-b"], "logLevel": "DEBUG"}},
        {"webhook": {"enabled": False}, "peering": {"enabled": False}},
        {
            "webhook": {"certManager": {"enabled": True}},
            "operator": {"healthPort": 18081, "metricsPort": 19090},
        },
    ],
)
def test_rendered_args_parse_with_the_operator_cli(
    helm: Path, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = operator_container(template(helm, {"crds": {"enabled": False}, **values}))
    for env in c["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    # Through `alertpipe`'s own main(), as the container's ENTRYPOINT runs it; only run() is replaced.
    seen: list[argparse.Namespace] = []

    def fake_run(parsed: argparse.Namespace) -> int:
        seen.append(parsed)
        return 0

    monkeypatch.setattr(operator_cli, "run", fake_run)
    assert cli.main(list(c["args"])) == 0
    (args,) = seen
    assert args.command == "operator"
    assert args.log_level == values.get("operator", {}).get("logLevel", "INFO")
    assert args.image == c["image"], "the worker image must be the chart's image"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert args.health_port == ports["health"] and args.metrics_port == ports["metrics"]
    assert args.namespace == values.get("operator", {}).get("watchNamespaces", [])
    if values.get("webhook", {}).get("enabled", True):
        assert args.webhook_port == ports["webhook"]
        mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "webhook-tls")
        assert args.webhook_cert == f"{mount}/tls.crt" and args.webhook_key == f"{mount}/tls.key"
    else:
        assert not args.webhook_port
    assert bool(args.peering) == values.get("peering", {}).get("enabled", True)
    # Probes hit the operator's health server.
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_webhook_paths_are_the_operator_handler_ids(helm: Path) -> None:
    hooks = one(template(helm, {"crds": {"enabled": False}}), "ValidatingWebhookConfiguration")["webhooks"]
    by_resource = {h["rules"][0]["resources"][0]: h["clientConfig"]["service"]["path"] for h in hooks}
    assert by_resource == {
        "alertrules": f"/{handlers.RULE_WEBHOOK_ID}",
        "alertpipelines": f"/{handlers.PIPELINE_WEBHOOK_ID}",
    }
