# mypy: disable-error-code="union-attr, index, arg-type"
"""status.slo across an operator restart: a pipeline pages twice and status.slo counts both
deliveries; the operator stops and a new one starts (the workers keep running). The new one has no
history in memory and continues the window from status.slo.base: its verdicts still count the two
deliveries instead of starting again with no data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

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
    run_operator,
    wait_for,
)
from devstack.pytest_plugin import LocalPods
from tests.e2e.tenant import tenant_pipeline

pytestmark = pytest.mark.e2e

API_KEY = "e2e-slo-key-0123456789ab"
SECRET = "e2e-slo-secret"  # noqa: S105 - a test fixture value


def test_a_restarted_operator_continues_the_slo_window(
    api: client.ApiClient, kubeconfig: Path, namespace: str, crds: None, tmp_path: Path,
    pod_runner: LocalPods, receiver: ThreadedReceiver, kafka_bootstrap: str, redis_url: str,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rec = receiver.receiver
    body = tenant_pipeline(api, namespace, receiver, pod_runner, kafka_bootstrap, redis_url, "slo", API_KEY,
                           SECRET)
    body["spec"].update({"allowedLateness": "1s", "slo": {"latencyP99": "30s", "successRatio": 0.9,
                                                         "window": "10m"}})

    def slo() -> dict[str, Any]:
        obj: dict[str, Any] = co.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "alertpipelines", "slo")  # type: ignore[assignment]
        return dict((obj.get("status") or {}).get("slo") or {})

    log = tmp_path / "operator.log"
    with run_operator(kubeconfig, namespace, log, ("--slo-interval", "1")):
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertpipelines", body)
        co.create_namespaced_custom_object(GROUP, VERSION, namespace, "alertrules", demo_rule("slo"))
        try:
            wait_for(lambda: (c := condition(co, namespace, "slo", "Ready")) is not None
                     and c["status"] == "True", "AlertPipeline Ready=True", 180)
        except AssertionError:
            raise AssertionError(log.read_text()[-3000:]) from None
        ingestor = f"{pod_address(core, namespace, 'slo', 'ingestor')}:8080"
        wait_for(lambda: http("GET", f"http://{ingestor}/readyz")[0] == 200, "ingestor /readyz", 120)
        t0 = int(time.time() * 1000)
        post_events(ingestor, API_KEY, [event(namespace, "d1", i, t0 + 3000 * i, 95 if i == 0 else 10)
                                        for i in range(3)])
        wait_for(lambda: len(rec.recorder.accepted("/webhook/ops")) >= 2, "firing and resolved", 60)
        wait_for(lambda: slo().get("deliveries", 0) >= 2, "status.slo: 2 deliveries", 30)
    before = slo()  # the last the first operator wrote
    assert before["met"] == "True" and before["deliveries"] == 2 and before["base"]["at"], before

    # a new operator process: the workers ran on; no delivery happens from here on. Its first write
    # (the covered window grew, so it writes) must still count the deliveries made before it started.
    with run_operator(kubeconfig, namespace, log, ("--slo-interval", "1")):
        after = wait_for(lambda: (s := slo()).get("observedAt") != before["observedAt"] and s,
                         "a status.slo written by the new operator", 30)
        assert (after["deliveries"], after["met"]) == (before["deliveries"], "True"), after
        seen = []
        for _ in range(6):
            time.sleep(0.5)
            seen.append(slo())
        assert all(s["deliveries"] == before["deliveries"] for s in seen), seen[-1]
        assert condition(co, namespace, "slo", "SLOMet")["status"] == "True"
