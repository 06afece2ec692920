# mypy: disable-error-code="index, union-attr, misc, no-untyped-call"
"""The operator under Argo CD's way of syncing: pipelines and rules server-side applied by the field
manager ``argocd-controller``. The operator must never write a tenant's spec (no drift in Argo's
diff; a re-sync is a no-op), and the chart's Argo CD health scripts, run on the live objects of real
reconciles, must say Healthy, Degraded and Suspended where they should.

Run with ``ALERTPIPE_CAPTURE_HEALTH=1`` to (re)write the captured objects under the scripts'
testdata/ (``*-captured.yaml``), which the unit test tests/unit/argocd/test_health.py replays.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from alertpipe.operator.models import AlertPipelineSpec
from devstack.kubectl import Kubectl
from devstack.pipeline import wait_for
from tests.argocd_health import CUSTOMIZATIONS, run_health, script

from .conftest import OperatorProcess
from .helpers import BAD, GOOD, Cluster, pipeline_body, rule_body

pytestmark = pytest.mark.integration

ARGO = "argocd-controller"  # the field manager Argo CD's server-side sync writes as
CAPTURE = os.environ.get("ALERTPIPE_CAPTURE_HEALTH") == "1"


def sync(kubectl: Kubectl, *manifests: dict[str, Any]) -> None:
    """What an Argo CD sync with ServerSideApply=true does: kubectl's server-side apply, forced."""
    kubectl("apply", "--server-side", f"--field-manager={ARGO}", "--force-conflicts", "-f", "-",
            manifests=list(manifests)).check()


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    h = run_health(script("alertpipe.io", kind).read_text(), obj)
    return h.status, h.message


def capture(kind: str, name: str, obj: dict[str, Any]) -> None:
    """Keep a real reconcile's object for the unit test (metadata trimmed to what the script reads)."""
    if not CAPTURE:
        return
    keep = {k: obj["metadata"][k] for k in ("name", "generation") if k in obj["metadata"]}
    doc = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": keep,
           "spec": obj.get("spec"), "status": obj.get("status")}
    path = CUSTOMIZATIONS / "alertpipe.io" / kind / "testdata" / f"{name}-captured.yaml"
    header = "# captured from a real reconcile by tests/integration/operator/test_gitops.py\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))


def writes_by_others(obj: dict[str, Any]) -> list[tuple[str, str | None, list[str]]]:
    """(manager, subresource, top-level fields) of every managedFields entry not Argo CD's."""
    out = []
    for m in obj["metadata"].get("managedFields") or []:
        if m.get("manager") != ARGO:
            out.append((m.get("manager"), m.get("subresource"), sorted(m.get("fieldsV1") or {})))
    return out


def without_empty(value: Any) -> Any:
    """``value`` with empty lists and maps left out: the schema defaults scalars and objects, and an
    empty list the model defaults to is the same as none (the operator reads both alike)."""
    if isinstance(value, dict):
        pruned = {k: without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def test_argo_sync_leaves_spec_alone_and_health_scripts_read_real_status(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str, kubeconfig: Path, kubectl_bin: Path
) -> None:
    kubectl = Kubectl(kubeconfig, k.ns, kubectl_bin)
    pipeline = pipeline_body("argo", kafka_bootstrap)
    good, bad = rule_body("cpu-high", GOOD), rule_body("broken", BAD)
    sync(kubectl, pipeline, good, bad)

    def reconciled(name: str, plural: str = "alertpipelines") -> dict[str, Any] | None:
        obj = k.get(plural, name)
        st = obj.get("status") or {}
        return obj if st.get("observedGeneration") == obj["metadata"]["generation"] else None

    ready = wait_for(lambda: (o := reconciled("argo")) and (condition(o, "Ready") or {}).get(
        "status") == "True" and o, "pipeline Ready=True", 120)
    assert health("AlertPipeline", ready) == ("Healthy", "topics, config and workers are in place")
    capture("AlertPipeline", "healthy", ready)

    live_rule = wait_for(lambda: (r := reconciled("cpu-high", "alertrules")) and r["status"].get("live")
                         and r, "rule live in the pipeline", 30)
    status, message = health("AlertRule", live_rule)
    assert status == "Healthy" and message.startswith("Live in argo@"), message
    capture("AlertRule", "healthy", live_rule)
    broken = wait_for(lambda: reconciled("broken", "alertrules"), "broken rule validated", 30)
    status, message = health("AlertRule", broken)
    assert status == "Degraded" and message == condition(broken, "Valid")["message"] != ""
    capture("AlertRule", "degraded", broken)

    # No drift: the stored spec is what Git holds plus the CRD schema's defaults (the same defaults
    # the operator's model applies), and nobody but Argo CD wrote the spec or the metadata.
    stored = k.get("alertpipelines", "argo")
    defaulted = AlertPipelineSpec.model_validate(pipeline["spec"]).model_dump(
        mode="json", by_alias=True, exclude_none=True)
    assert without_empty(stored["spec"]) == without_empty(defaulted)
    for manager, sub, fields in writes_by_others(stored):
        assert sub == "status" and fields == ["f:status"], (manager, sub, fields)
    for rule in (live_rule, broken):
        for manager, sub, fields in writes_by_others(k.get("alertrules", rule["metadata"]["name"])):
            assert sub == "status" and fields == ["f:status"], (manager, sub, fields)

    # A re-sync of the same manifests changes nothing at all (Argo's diff is empty: no write)
    before = {n: k.get(p, n)["metadata"]["resourceVersion"]
              for p, n in (("alertpipelines", "argo"), ("alertrules", "cpu-high"), ("alertrules", "broken"))}
    sync(kubectl, pipeline, good, bad)
    after = {n: k.get(p, n)["metadata"]["resourceVersion"]
             for p, n in (("alertpipelines", "argo"), ("alertrules", "cpu-high"), ("alertrules", "broken"))}
    assert after == before

    # A kill switch committed to Git: Suspended, with the reason
    switched = copy.deepcopy(pipeline)
    switched["spec"]["killSwitches"] = {"stopDelivery": {"reason": "receiver outage INC-9"}}
    sync(kubectl, switched)
    suspended = wait_for(lambda: (o := reconciled("argo")) and (condition(o, "KillSwitchActive") or {}).get(
        "status") == "True" and o, "KillSwitchActive=True", 30)
    status, message = health("AlertPipeline", suspended)
    assert status == "Suspended" and "receiver outage INC-9" in message, message
    capture("AlertPipeline", "suspended", suspended)

    # A spec the schema lets through but the operator cannot run (no webhook here): Degraded, its message
    invalid = copy.deepcopy(pipeline)
    invalid["spec"]["killSwitches"] = {"mutedChannels": [{"name": "nope", "reason": "noisy"}]}
    sync(kubectl, invalid)
    degraded = wait_for(lambda: (o := reconciled("argo")) and (condition(o, "Ready") or {}).get(
        "reason") == "InvalidSpec" and o, "Ready=False InvalidSpec", 30)
    status, message = health("AlertPipeline", degraded)
    assert status == "Degraded" and "unknown channel 'nope'" in message, message
    capture("AlertPipeline", "degraded-invalid-spec", degraded)
    for manager, sub, fields in writes_by_others(k.get("alertpipelines", "argo")):
        assert sub == "status" and fields == ["f:status"], (manager, sub, fields)
