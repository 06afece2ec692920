# mypy: disable-error-code="union-attr, index"
"""The history sink run by the operator: `spec.history` makes a Deployment that keeps the pipeline's
decision log in PostgreSQL (its DSN from a Secret), a page shows up there as paged, and turning it off
removes the Deployment."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from kubernetes import client

from alertpipe.workers.history import Outcome, outcomes
from devstack.pipeline import (
    GROUP,
    VERSION,
    ThreadedReceiver,
    condition,
    demo_rule,
    event,
    http,
    pod_address,
    post_events,
    wait_for,
)
from devstack.pytest_plugin import LocalPods
from tests.e2e.tenant import tenant_pipeline

pytestmark = pytest.mark.e2e

API_KEY = "e2e-history-key-0123456789"
SIGNING_SECRET = "e2e-history-signing"  # noqa: S105 - a test fixture value


def test_the_operator_runs_the_history_sink_and_a_page_lands_in_postgres(
    api: client.ApiClient, namespace: str, operator: Path, pod_runner: LocalPods, receiver: ThreadedReceiver,
    kafka_bootstrap: str, redis_url: str, postgres_dsn: str,
) -> None:  # fmt: skip
    core, co, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    rec = receiver.receiver
    body = tenant_pipeline(api, namespace, receiver, pod_runner, kafka_bootstrap, redis_url, "edge", API_KEY,
                           SIGNING_SECRET, ("history-db", "dsn", postgres_dsn))
    body["spec"]["history"] = {
        "enabled": True, "dsnSecretRef": {"name": "history-db", "key": "dsn"}, "retentionDays": 3,
        "nodeSelector": pod_runner.node_selector,
    }  # fmt: skip
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", body)
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules", demo_rule("edge"))

    def ready() -> bool:
        c = condition(co, namespace, "edge", "Ready")
        return c is not None and c["status"] == "True"

    try:
        wait_for(ready, "AlertPipeline Ready=True (the history Deployment available too)", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    sink = apps.read_namespaced_deployment("edge-history", namespace)
    assert sink.spec.template.spec.containers[0].command[:3] == ["alertpipe", "history", "sink"]
    ingestor = f"{pod_address(core, namespace, 'edge', 'ingestor')}:8080"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
    t0 = int(time.time() * 1000)
    sent = [event(namespace, "d1", 1, t0, 50), event(namespace, "d1", 2, t0 + 6000, 95)]
    post_events(ingestor, API_KEY, sent)
    wait_for(lambda: rec.recorder.accepted("/webhook/ops"), "the page at the webhook", 60)
    page = rec.recorder.accepted("/webhook/ops")[0].json["alert"]

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:

        def in_history() -> list[Outcome]:
            try:
                found = outcomes(conn, rule="cpu-hot", pipeline="edge", tenant=namespace, since_ms=0)
            except psycopg.errors.UndefinedTable:  # the sink has not created its table yet
                return []
            return [o for o in found if o.alert_id == page["id"] and o.paged]

        wait_for(in_history, "the page in the history (PostgreSQL)", 60)

    co.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "alertpipelines", "edge", {"spec": {"history": {"enabled": False}}}
    )
    wait_for(lambda: not apps.list_namespaced_deployment(
        namespace, label_selector="app.kubernetes.io/component=history").items,
        "the sink's Deployment gone", 60)
    wait_for(lambda: any(e.reason == "WorkloadRemoved" and "history" in (e.message or "")
                         for e in core.list_namespaced_event(namespace).items),
             "the WorkloadRemoved Event", 30)
