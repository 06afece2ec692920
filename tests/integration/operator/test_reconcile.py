# ruff: noqa: E501
# mypy: disable-error-code="index, union-attr, return-value, misc, unused-ignore, no-untyped-call"
"""The operator against the real apiserver, controllers, kwok nodes and Kafka (devstack)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from kubernetes import client

from alertpipe.operator.decisions.validation import validate_rule
from alertpipe.operator.models import AlertPipelineSpec
from devstack.pipeline import wait_for

from .conftest import OperatorProcess
from .helpers import BAD, GOOD, GOOD2, Cluster, G, V, pipeline_body, rule_body

pytestmark = pytest.mark.integration


def topic_partitions(bootstrap: str, names: list[str]) -> dict[str, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {n: len(md.topics[n].partitions) for n in names if n in md.topics}


def reconciled_at(metrics_text: str, namespace: str, pipeline: str) -> float | None:
    """When the operator last completed a full reconcile of the pipeline, from its /metrics text."""
    head = f'alertpipe_operator_pipeline_reconciled_timestamp_seconds{{namespace="{namespace}",pipeline="{pipeline}"}} '
    for line in metrics_text.splitlines():
        if line.startswith(head):
            return float(line[len(head) :])
    return None


def test_pipeline_gets_topics_config_workloads_and_ready(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str, unique: str
) -> None:
    ns = k.ns
    k.create(rule_body("cpu-high", GOOD))
    k.create(pipeline_body("main", kafka_bootstrap))

    ready = wait_for(
        lambda: (c := k.condition("alertpipelines", "main", "Ready")) and c["status"] == "True" and c,
        "pipeline Ready=True (Deployments Available on kwok)",
        120,
    )
    status = k.get("alertpipelines", "main")["status"]
    assert status["observedGeneration"] == k.get("alertpipelines", "main")["metadata"]["generation"]
    assert ready["reason"] == "PipelineReady"
    assert status["replicas"]["evaluator"] == {"desired": 2, "available": 2}
    assert status["rules"]["valid"] == 1

    parts = topic_partitions(kafka_bootstrap, [f"{ns}.main.events", f"{ns}.main.alerts", f"{ns}.main.late"])
    assert parts == {f"{ns}.main.events": 3, f"{ns}.main.alerts": 2, f"{ns}.main.late": 1}

    cfg = k.config("main")
    assert cfg is not None and [r["name"] for r in cfg["rules"]] == ["cpu-high"]
    assert cfg["revision"] == status["revision"] and cfg["kafka"]["topics"]["events"] == f"{ns}.main.events"

    deps = {d.metadata.name: d for d in k.apps.list_namespaced_deployment(ns).items}
    assert set(deps) == {"main-ingestor", "main-evaluator", "main-deliverer"}
    ev = deps["main-evaluator"]
    assert ev.metadata.owner_references[0].kind == "AlertPipeline"
    assert ev.metadata.labels["app.kubernetes.io/component"] == "evaluator"
    assert ev.spec.template.spec.containers[0].command[:4] == [
        "alertpipe",
        "evaluator",
        "--config",
        f"configmap:{ns}/main-config",
    ]
    assert k.core.read_namespaced_service("main-ingestor", ns).spec.ports[0].port == 80
    role = client.RbacAuthorizationV1Api(k.core.api_client).read_namespaced_role("main-worker", ns)
    assert role.rules[0].resource_names == ["main-config", "main-config-canary"] and role.rules[0].verbs == ["get", "list", "watch"]
    assert any("created topic" in m for m in k.events("TopicCreated"))

    assert operator.http_get(operator.health_port, "/healthz")[0] == 200
    assert operator.http_get(operator.health_port, "/readyz")[0] == 200
    code, text = operator.http_get(operator.metrics_port, "/metrics")
    assert code == 200
    assert 'alertpipe_operator_reconciles_total{kind="AlertPipeline",result="ok"}' in text
    assert "alertpipe_operator_reconcile_duration_seconds_bucket" in text
    assert 'alertpipe_operator_writes_total{kind="Deployment",verb="create"} 3.0' in text

    rule_status = wait_for(
        lambda: k.get("alertrules", "cpu-high").get("status", {}).get("live"), "rule live revision", 30
    )
    assert rule_status == [{"pipeline": "main", "revision": status["revision"]}]


def test_invalid_rule_is_reported_and_others_go_live_edit_and_delete(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str
) -> None:
    k.create(pipeline_body("p", kafka_bootstrap))
    k.create(rule_body("good-a", GOOD))
    k.create(rule_body("good-b", GOOD2))
    k.create(rule_body("broken", BAD))  # no webhook in this test: stored, then reported in status

    valid = wait_for(
        lambda: (c := k.condition("alertrules", "broken", "Valid")) and c, "Valid on the broken rule", 60
    )
    assert valid["status"] == "False" and valid["message"].startswith("spec.threshold.condition: ")
    channels = list(AlertPipelineSpec.model_validate(pipeline_body("p", kafka_bootstrap)["spec"]).channels)
    assert valid["message"] == validate_rule("broken", BAD, channels).message  # what the webhook says too
    wait_for(
        lambda: (c := k.config("p")) and sorted(r["name"] for r in c["rules"]) == ["good-a", "good-b"],
        "the two good rules in the config",
        60,
    )
    assert k.condition("alertrules", "good-a", "Valid")["status"] == "True"  # type: ignore[index]
    rules_ready = wait_for(
        lambda: (c := k.condition("alertpipelines", "p", "RulesReady")) and c["status"] == "False" and c,
        "RulesReady=False",
        30,
    )
    assert "broken: spec.threshold.condition" in rules_ready["message"]
    wait_for(
        lambda: any("spec.threshold.condition" in m for m in k.events("RuleRejected")),
        "RuleRejected Event",
        30,
    )

    before = k.config("p")["revision"]  # type: ignore[index]
    t0 = time.monotonic()
    k.patch_spec("alertrules", "good-a", {"threshold": {"condition": "value > 90"}})
    wait_for(lambda: k.config("p")["revision"] != before, "a new revision after a rule edit", 10, every=0.01)  # type: ignore[index]
    assert time.monotonic() - t0 < 2.0, "rule edit -> new revision took longer than 2 s"
    assert (
        next(r for r in k.config("p")["rules"] if r["name"] == "good-a")["spec"]["threshold"]["condition"]
        == "value > 90"
    )  # type: ignore[index]

    # fixing the broken rule brings it live; deleting a rule takes it out
    k.patch_spec("alertrules", "broken", {"threshold": {"condition": "value > 1"}})
    wait_for(lambda: len(k.config("p")["rules"]) == 3, "the fixed rule live", 10)  # type: ignore[index]
    k.co.delete_namespaced_custom_object(G, V, k.ns, "alertrules", "good-b")
    wait_for(
        lambda: sorted(r["name"] for r in k.config("p")["rules"]) == ["broken", "good-a"],
        "deleted rule gone",
        10,
    )  # type: ignore[index]

    k.co.delete_namespaced_custom_object(G, V, k.ns, "alertpipelines", "p")
    wait_for(
        lambda: not k.apps.list_namespaced_deployment(k.ns).items and k.config("p") is None,
        "owned Deployments and ConfigMap garbage-collected",
        90,
    )


def test_partition_decrease_refused_and_restart_writes_nothing(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str, operator_factory: Any
) -> None:
    k.create(rule_body("r1", GOOD))
    k.create(pipeline_body("q", kafka_bootstrap))
    try:  # kwok pod stages and the controllers on a loaded 2-core machine: 120 s once ran out in CI
        wait_for(
            lambda: (c := k.condition("alertpipelines", "q", "Ready")) and c["status"] == "True", "Ready", 240
        )
    except AssertionError as exc:
        status = k.get("alertpipelines", "q").get("status")
        raise AssertionError(f"{exc}\nstatus: {status}\noperator log:\n{operator.output()[-3000:]}") from None

    k.patch_spec(
        "alertpipelines",
        "q",
        {"kafka": {"bootstrapServers": kafka_bootstrap, "topics": {"events": {"partitions": 1}}}},
    )
    cond = wait_for(
        lambda: (c := k.condition("alertpipelines", "q", "TopicsReady")) and c["status"] == "False" and c,
        "TopicsReady=False",
        30,
    )
    assert cond["reason"] == "PartitionDecreaseNotSupported" and "has 3, spec asks 1" in cond["message"]
    assert topic_partitions(kafka_bootstrap, [f"{k.ns}.q.events"]) == {f"{k.ns}.q.events": 3}
    wait_for(lambda: k.events("PartitionDecreaseNotSupported"), "Warning Event", 30)

    k.patch_spec(
        "alertpipelines",
        "q",
        {"kafka": {"bootstrapServers": kafka_bootstrap, "topics": {"events": {"partitions": 5}}}},
    )
    wait_for(
        lambda: topic_partitions(kafka_bootstrap, [f"{k.ns}.q.events"]) == {f"{k.ns}.q.events": 5},
        "grown to 5",
        30,
    )
    wait_for(
        lambda: (c := k.condition("alertpipelines", "q", "Ready")) and c["status"] == "True",
        "Ready again",
        60,
    )
    # the snapshot is taken once nothing has changed for 2 s (in-flight status writes have landed)
    snapshots: list[tuple[float, dict[str, str]]] = []

    def settled() -> dict[str, str] | None:
        now, rvs = time.monotonic(), k.resource_versions("q")
        if not snapshots or snapshots[-1][1] != rvs:
            snapshots.append((now, rvs))
        return rvs if now - snapshots[-1][0] >= 2.0 else None

    before = wait_for(settled, "resourceVersions to settle", 60, every=0.2)
    operator.stop()
    restarted = time.time()
    operator.start()
    # A positive signal first: the new process (fresh metrics on the same port) has completed a full
    # reconcile of every pipeline in the namespace. Only then does "no writes" mean "nothing to write".
    names = [
        p["metadata"]["name"]
        for p in k.co.list_namespaced_custom_object(G, V, k.ns, "alertpipelines")["items"]
    ]
    assert names == ["q"]

    def reconciled_all() -> str | None:
        code, text = operator.http_get(operator.metrics_port, "/metrics")
        stamps = {n: reconciled_at(text, k.ns, n) for n in names}
        return (
            text if code == 200 and all(t is not None and t >= restarted for t in stamps.values()) else None
        )

    try:
        text = wait_for(reconciled_all, "the restarted operator to reconcile every pipeline", 60, every=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator.output()[-3000:]}") from None
    assert k.resource_versions("q") == before
    # and it stays that way: no write in the next seconds, in Kubernetes or in the operator's own count
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert k.resource_versions("q") == before
        time.sleep(0.25)
    text = operator.http_get(operator.metrics_port, "/metrics")[1]
    writes = [line for line in text.splitlines() if line.startswith("alertpipe_operator_writes_total{")]
    assert all(line.endswith(" 0.0") for line in writes), writes


def test_kill_switch_flows_into_config_and_expires(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str
) -> None:
    k.create(pipeline_body("ks", kafka_bootstrap))
    wait_for(lambda: k.config("ks"), "config", 60)
    expires = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
    until = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    k.patch_spec(
        "alertpipelines",
        "ks",
        {"killSwitches": {"stopDelivery": {"reason": "receiver outage INC-7", "until": until}}},
    )
    wait_for(
        lambda: (k.config("ks") or {}).get("killSwitches", {}).get("stopDelivery"),
        "stopDelivery in config",
        3,  # "effective in seconds"; bench/operator/killswitch.json measures ~0.1 s to the workers
    )
    cond = wait_for(
        lambda: (
            (c := k.condition("alertpipelines", "ks", "KillSwitchActive")) and c["status"] == "True" and c
        ),
        "KillSwitchActive=True",
        3,
    )
    assert "receiver outage INC-7" in cond["message"]
    wait_for(lambda: any("INC-7" in m for m in k.events("KillSwitchOn")), "KillSwitchOn Event", 10)
    # expiry: the operator's timer clears it from the config and says so in status
    wait_for(
        lambda: not (k.config("ks") or {}).get("killSwitches", {}).get("stopDelivery"),
        "expired switch cleared",
        (expires - datetime.now(UTC)).total_seconds() + 3,  # a few seconds after `until`
    )
    cond = wait_for(
        lambda: (
            (c := k.condition("alertpipelines", "ks", "KillSwitchActive")) and c["status"] == "False" and c
        ),
        "KillSwitchActive=False",
        3,
    )
    assert cond["reason"] == "KillSwitchExpired" and "INC-7" in cond["message"]


def test_disabled_role_and_deletion_policy(
    k: Cluster, operator: OperatorProcess, kafka_bootstrap: str
) -> None:
    k.create(pipeline_body("gone", kafka_bootstrap, deletionPolicy="Delete"))
    k.create(pipeline_body("kept", kafka_bootstrap))
    topics = {p: [f"{k.ns}.{p}.events", f"{k.ns}.{p}.alerts"] for p in ("gone", "kept")}
    for p in topics:
        wait_for(lambda p=p: len(topic_partitions(kafka_bootstrap, topics[p])) == 2, f"{p} topics", 60)
    wait_for(lambda: len(k.apps.list_namespaced_deployment(k.ns).items) == 6, "six Deployments", 60)
    # only the Delete pipeline carries a finalizer (something outside Kubernetes to clean up)
    assert k.get("alertpipelines", "gone")["metadata"].get("finalizers") == ["alertpipe.io/topics"]
    assert not k.get("alertpipelines", "kept")["metadata"].get("finalizers")

    k.patch_spec("alertpipelines", "kept", {"ingestor": {"enabled": False}})
    wait_for(
        lambda: (
            "kept-ingestor" not in {d.metadata.name for d in k.apps.list_namespaced_deployment(k.ns).items}
        ),
        "ingestor Deployment removed",
        30,
    )
    wait_for(
        lambda: "kept-ingestor" not in {s.metadata.name for s in k.core.list_namespaced_service(k.ns).items},
        "ingestor Service removed",
        30,
    )

    for p in ("gone", "kept"):
        k.co.delete_namespaced_custom_object(G, V, k.ns, "alertpipelines", p)
    wait_for(
        lambda: not topic_partitions(kafka_bootstrap, topics["gone"]),
        "topics of the Delete pipeline deleted",
        60,
    )
    wait_for(
        lambda: not k.co.list_namespaced_custom_object(G, V, k.ns, "alertpipelines")["items"],
        "pipelines gone",
        60,
    )
    assert len(topic_partitions(kafka_bootstrap, topics["kept"])) == 2  # Retain keeps them


def test_a_burst_of_100_rule_edits_gives_a_few_revisions(
    k: Cluster, operator_factory: Any, kafka_bootstrap: str
) -> None:
    # Edits are gathered until none came for --rule-debounce, but never longer than --rule-max-wait.
    # A debounce no gap between 8 parallel creates reaches and a max wait longer than the whole burst
    # leave the design one revision for the burst; the bound below is a constant, whatever the
    # burst's own duration on a loaded machine (a gap over 1 s could add one, the tail one more).
    operator_factory("--rule-debounce", "1.0", "--rule-max-wait", "30")
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import watch
    from urllib3.exceptions import ProtocolError

    k.create(pipeline_body("burst", kafka_bootstrap))
    wait_for(lambda: k.config("burst"), "config", 60)
    revisions: list[str] = []
    stop = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        try:
            for ev in w.stream(
                k.core.list_namespaced_config_map,
                k.ns,
                field_selector="metadata.name=burst-config",
                timeout_seconds=60,
            ):
                rev = json.loads(ev["object"].data["config.json"])["revision"]
                if not revisions or revisions[-1] != rev:
                    revisions.append(rev)
                if stop.is_set():
                    break
        except (ProtocolError, client.ApiException):
            if not stop.is_set():  # the connection only ends on purpose, at teardown
                raise
        finally:
            w.stop()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    wait_for(lambda: revisions, "the watch to see the current revision", 10)
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: k.create(
                    rule_body(f"r{i:03d}", {**GOOD, "threshold": {"condition": f"value > {i}"}})
                ),
                range(100),
            )
        )
    burst = time.monotonic() - start
    last = time.monotonic()
    wait_for(
        lambda: len((k.config("burst") or {}).get("rules", [])) == 100, "all 100 rules live", 30, every=0.01
    )
    lag = time.monotonic() - last
    time.sleep(1.5)  # anything still to come would be a needless extra revision
    stop.set()

    made = len(revisions) - 1
    print(f"100 rules created in {burst:.2f} s -> {made} revisions; last create -> live {lag:.2f} s")
    # How fast the last edit goes live is bench/operator's figure (target p99 <= 2 s), not this test's:
    # on a loaded CI machine it varies; the wait above bounds it.
    assert 1 <= made <= 3, (made, burst)
