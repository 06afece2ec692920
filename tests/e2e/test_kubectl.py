# ruff: noqa: E501
# mypy: disable-error-code="union-attr, index, arg-type"
"""The tenant's view through kubectl (the devstack's, at its Kubernetes version): apply a pipeline
client-side and a rule server-side, read them with ``get ap,ar`` (printer columns), ``explain`` (the
models' descriptions), ``describe`` (the operator's Events), and a broken manifest's error exactly as
kubectl prints it (strict field validation names a typo'd field)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from devstack.kubectl import Kubectl
from devstack.pipeline import condition, demo_pipeline, demo_rule, wait_for
from devstack.pytest_plugin import LocalPods

pytestmark = pytest.mark.e2e


def columns(table: str) -> list[str]:
    return re.split(r"\s{2,}", table.splitlines()[0].strip())


def test_tenant_applies_reads_and_is_told_what_is_wrong(
    kubectl_bin: Path,
    kubeconfig: Path,
    namespace: str,
    operator: Path,
    api: client.ApiClient,
    kafka_bootstrap: str,
    redis_url: str,
    pod_runner: LocalPods,
) -> None:
    kc = Kubectl(kubeconfig, namespace, kubectl_bin)
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for name, key in (("ingest-keys", "keys"), ("hook", "secret")):
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={key: uuid.uuid4().hex})
        )
    pipeline = demo_pipeline("demo", kafka_bootstrap, redis_url, "http://127.0.0.1:9/hook", pod_runner.node_selector)

    assert kc.apply(pipeline).strip() == "alertpipeline.alertpipe.io/demo created"
    assert kc.apply(demo_rule("demo"), server_side=True).strip() == "alertrule.alertpipe.io/cpu-hot serverside-applied"
    # Again, unchanged: kubectl may say "configured" (a CR is JSON-merge-patched, which replaces a
    # list whole, and the apiserver's defaults inside spec.channels items differ from the file) but
    # the stored spec is the same, so the generation does not move and nothing is reconciled anew.
    assert re.fullmatch(r"alertpipeline\.alertpipe\.io/demo (unchanged|configured)", kc.apply(pipeline).strip())
    assert kc("get", "ap", "demo", "-o", "jsonpath={.metadata.generation}").check().stdout == "1"

    wait_for(lambda: (c := condition(co, namespace, "demo", "Ready")) and c["status"] == "True", "Ready=True", 180)
    wait_for(lambda: "demo" in kc("get", "ar", "cpu-hot", "-o", "jsonpath={.status.pipelines}").stdout, "rule status", 30)
    got = kc("get", "ap,ar").check().stdout
    blocks = [b for b in got.strip().split("\n\n") if b]
    assert columns(blocks[0]) == ["NAME", "READY", "RULES", "EVALUATORS", "DELIVERERS", "LAG", "REVISION", "CANARY", "SLO", "AGE"]
    assert columns(blocks[1]) == ["NAME", "VALID", "SEVERITY", "PIPELINE", "AGE"]
    revision = co.get_namespaced_custom_object("alertpipe.io", "v1alpha1", namespace, "alertpipelines", "demo")["status"]["revision"]
    assert re.search(rf"^alertpipeline\.alertpipe\.io/demo\s+True\s+1\s+1\s+1\s+\S*\s*{revision}\s", blocks[0], re.M), got
    assert re.search(r'^alertrule\.alertpipe\.io/cpu-hot\s+True\s+critical\s+\["demo"\]\s', blocks[1], re.M), got

    explained = kc("explain", "alertpipeline.spec.channels").check().stdout
    assert "Named destinations rules can notify." in explained
    assert re.search(r"^\s+webhook\s+<Object>", explained, re.M) and "FIELDS:" in explained

    described = kc("describe", "ap", "demo").check().stdout
    events = described.split("\nEvents:", 1)[1]
    for reason in ("TopicCreated", "ConfigCreated", "Ready"):
        assert re.search(rf"Normal\s+{reason}\s", events), described

    broken = demo_rule("demo")
    broken["metadata"]["name"] = "typo"
    broken["spec"]["treshold"] = broken["spec"].pop("threshold")
    out = kc("apply", "-f", "-", manifests=[broken])
    assert out.returncode == 1 and out.stdout == ""
    assert 'unknown field "spec.treshold"' in out.stderr, out.stderr
    assert out.stderr.startswith('Error from server (BadRequest): error when creating "STDIN": '), out.stderr
    assert kc("get", "ar", "typo").returncode == 1  # nothing was stored
