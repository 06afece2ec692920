# mypy: disable-error-code="union-attr, index, arg-type"
"""A rule whose groups span devices on the whole system: ``alertpipe generate --sites`` puts devices
in sites with outages, ``gen-site-down`` (``by: [site]``) runs in the evaluator's repartition stage
(events → stage 1 → the repartition topic → stage 2, through real Kafka), and every site alert of
the ledger reaches the webhook once, with the event times the ledger predicts, edge cases and all.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client

from alertpipe.generate import SITE_RULE, Knobs, Scenario, generate, parse_schedule, rule_manifests
from alertpipe.generate.plan import Plan
from devstack.pipeline import (
    GROUP,
    VERSION,
    ThreadedReceiver,
    condition,
    http,
    pod_address,
    wait_for,
)
from devstack.pytest_plugin import LocalPods
from tests.e2e.tenant import tenant_pipeline

pytestmark = pytest.mark.e2e

API_KEY = "e2e-site-key-0123456789"
SECRET = "e2e-site-secret"  # noqa: S105 - a test fixture value
PIPELINE = "sites"


def test_site_alerts_of_the_ledger_arrive_once_through_the_repartition_stage(
    api: client.ApiClient,
    namespace: str,
    operator: Path,
    pod_runner: LocalPods,
    receiver: ThreadedReceiver,
    kafka_bootstrap: str,
    redis_url: str,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rec = receiver.receiver
    body = tenant_pipeline(api, namespace, receiver, pod_runner, kafka_bootstrap, redis_url, PIPELINE,
                           API_KEY,
                           SECRET)
    body["spec"].update({"allowedLateness": "5s", "idleTimeout": "2s"})  # end-of-stream timers fire soon
    body["spec"]["kafka"]["topics"]["repartition"] = {"partitions": 2}
    co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", body)

    knobs = Knobs(duplicates=0.03, reorder=0.03, reorder_ms=1000, late=0.01, gaps=0.005, skew_ms=600)
    scenario = Scenario(namespace, PIPELINE, parse_schedule("steady:150"), 24.0, devices=30, flappers=0.0,
                        sites=3, site_episode_every_s=7.0, site_episode_len_s=2.5, knobs=knobs)
    for rule in rule_manifests(Plan(scenario, 0), {"alertpipe.io/pipeline": PIPELINE}):
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules", rule)

    def ready() -> bool:
        c = condition(co, namespace, PIPELINE, "Ready")
        return c is not None and c["status"] == "True"

    try:
        wait_for(ready, "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    ingestor = f"{pod_address(core, namespace, PIPELINE, 'ingestor')}:8080"
    deliverer = f"{pod_address(core, namespace, PIPELINE, 'deliverer')}:9102"
    wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
    wait_for(lambda: http("GET", f"http://{deliverer}/readyz")[0] == 200, "deliverer /readyz", 60)

    ledger = generate(scenario, url=f"http://{ingestor}/v1/events", api_key=API_KEY, batch=100)
    assert ledger.complete(), ledger.summary()
    want = {f"{e.id}:{e.status}:ops": e for e in ledger.expected}
    assert {e.rule for e in ledger.expected} == {SITE_RULE}  # no flappers: the site rule alone
    assert {e.group_key for e in ledger.expected} == {"site=site-00", "site=site-01", "site=site-02"}
    assert len(want) == len(ledger.expected) >= 3 * 2 * 2

    def arrived() -> set[str]:
        return {r.key for r in rec.recorder.accepted("/webhook/ops") if r.key}

    try:
        wait_for(lambda: arrived() >= set(want), "every site alert of the ledger", 90, every=0.2)
    except AssertionError:
        raise AssertionError(f"missing: {sorted(set(want) - arrived())[:5]}") from None
    time.sleep(3.0)  # anything extra (a duplicate, an alert no correct system raises) would come now
    got = rec.recorder.accepted("/webhook/ops")
    assert arrived() == set(want), f"unexpected: {sorted(arrived() - set(want))[:5]}"
    assert rec.recorder.duplicates() == 0 and len(got) == len(want)
    for r in got:
        e, alert = want[r.key], r.json["alert"]
        assert (alert["groupKey"], alert["eventTimeMs"], alert["startsAtMs"]) == (
            e.group_key, e.at_ms, e.starts_at_ms), r.key
        assert "readings dropped at site-0" in alert["annotations"]["summary"]
