# mypy: disable-error-code="index, union-attr, misc, no-untyped-call"
"""Owned objects edited or deleted by hand are restored at once (their watch), not at the resync."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from kubernetes import client

from devstack.pipeline import wait_for

from .conftest import OperatorProcess
from .helpers import GOOD, Cluster, pipeline_body, rule_body

pytestmark = pytest.mark.integration


def service_uid(k: Cluster) -> str | None:
    try:
        return str(k.core.read_namespaced_service("d-ingestor", k.ns).metadata.uid)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def role_rules(rbac: client.RbacAuthorizationV1Api, ns: str) -> list[client.V1PolicyRule] | None:
    try:
        return list(rbac.read_namespaced_role("d-worker", ns).rules or [])
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_hand_edits_of_owned_objects_are_undone_within_seconds(
    k: Cluster, operator_factory: Callable[..., OperatorProcess], kafka_bootstrap: str
) -> None:
    # a resync far beyond the test: only the watch can restore anything here
    operator = operator_factory("--resync", "3600")
    ns = k.ns
    rbac = client.RbacAuthorizationV1Api(k.core.api_client)
    k.create(rule_body("cpu-high", GOOD))
    k.create(pipeline_body("d", kafka_bootstrap))
    want = wait_for(lambda: (c := k.config("d")) and c["rules"] and c, "config with the rule", 60)
    wait_for(lambda: service_uid(k) is not None, "ingestor Service", 60)
    wait_for(lambda: role_rules(rbac, ns) is not None, "worker Role", 60)
    original_rules = role_rules(rbac, ns)

    try:
        # 1. the compiled config, emptied by hand
        t0 = time.monotonic()
        k.core.patch_namespaced_config_map("d-config", ns, {"data": {"config.json": "{}"}})
        wait_for(lambda: k.config("d") == want, "ConfigMap restored", 30, every=0.05)
        took = time.monotonic() - t0
        events = wait_for(lambda: k.events("DriftCorrected"), "a DriftCorrected Event", 30)
        assert any("ConfigMap d-config" in m for m in events), events
        assert took < 30  # far below the 3600 s resync; typically well under a second

        # 2. the workers' Role widened by hand (a second rule): the extra rule is removed
        role = rbac.read_namespaced_role("d-worker", ns)
        role.rules.append(client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["get"]))
        rbac.replace_namespaced_role("d-worker", ns, role)
        wait_for(lambda: role_rules(rbac, ns) == original_rules, "Role restored", 30)

        # 3. the ingestor Service deleted by hand: recreated
        old_uid = service_uid(k)
        k.core.delete_namespaced_service("d-ingestor", ns)
        wait_for(lambda: service_uid(k) not in (None, old_uid), "Service recreated", 30)
        wait_for(
            lambda: sum("Service d-ingestor" in m for m in k.events("DriftCorrected")) >= 1,
            "a DriftCorrected Event for the Service",
            30,
        )

        # our own writes and a label someone adds are not drift: no Event for them
        k.core.patch_namespaced_config_map("d-config", ns, {"metadata": {"labels": {"team": "x"}}})
        time.sleep(2)
        assert not any("ServiceAccount" in m or "RoleBinding" in m for m in k.events("DriftCorrected"))
        assert json.loads(k.core.read_namespaced_config_map("d-config", ns).data["config.json"]) == want
    except BaseException:
        print(operator.output()[-6000:])
        raise

    # the live Deployment carries the production fields the apiserver accepted
    ev = k.apps.read_namespaced_deployment("d-evaluator", ns).spec.template.spec
    c = ev.containers[0]
    assert {e.name for e in c.env} >= {"ALERTPIPE_INSTANCE_ID", "POD_NAME"}
    assert c.readiness_probe.http_get.path == "/readyz" and c.liveness_probe.http_get.path == "/healthz"
    assert ev.security_context.run_as_non_root and c.security_context.read_only_root_filesystem
