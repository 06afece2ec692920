"""Worker Deployments fit for production: instance id, probes on served paths, pull settings,
resource defaults, non-root read-only pods (pure rendering, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from alertpipe.operator.decisions.workloads import (
    DEFAULT_RESOURCES,
    INGESTOR_PORT,
    METRICS_PORT,
    Owner,
    desired_objects,
    drifted,
    needs_update,
)
from alertpipe.operator.models import AlertPipelineSpec

pytestmark = pytest.mark.unit

OWNER = Owner("tenant", "p", "uid-1")


def spec(**extra: Any) -> AlertPipelineSpec:
    return AlertPipelineSpec.model_validate(
        {"kafka": {"bootstrapServers": "k:9092"}, "redis": {"url": "redis://r:6379/0"}, **extra}
    )


def deployments(s: AlertPipelineSpec, **kw: Any) -> dict[str, dict[str, Any]]:
    objs = desired_objects(OWNER, s, "img:1", {}, **kw)
    return {o["metadata"]["name"].rsplit("-", 1)[1]: o for o in objs if o["kind"] == "Deployment"}


def pod(dep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dep["spec"]["template"]["spec"]
    return out


def container(dep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = pod(dep)["containers"][0]
    return out


def test_consumers_get_the_pod_name_as_static_member_id() -> None:
    deps = deployments(spec())
    for role in ("evaluator", "deliverer"):
        env = {e["name"]: e for e in container(deps[role])["env"]}
        assert env["ALERTPIPE_INSTANCE_ID"] == {
            "name": "ALERTPIPE_INSTANCE_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }
    # the ingestor only produces: no consumer group, no instance id
    assert "ALERTPIPE_INSTANCE_ID" not in {e["name"] for e in container(deps["ingestor"])["env"]}


def test_probes_hit_the_port_and_paths_each_worker_serves() -> None:
    deps = deployments(spec())
    for role, port_name, number, flag in (
        ("ingestor", "http", INGESTOR_PORT, None),
        ("evaluator", "metrics", METRICS_PORT, "--metrics-port"),
        ("deliverer", "metrics", METRICS_PORT, "--metrics-port"),
    ):
        c = container(deps[role])
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {port_name: number}
        if flag:  # the worker listens where the probes look
            assert c["command"][c["command"].index(flag) + 1] == str(number)
        probes = (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"))
        for probe, path in probes:
            assert c[probe]["httpGet"] == {"path": path, "port": port_name}, (role, probe)
        # a startup window long enough for the first config; liveness never kills a slow starter
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 60


def test_pull_policy_and_secrets_from_operator_and_spec() -> None:
    deps = deployments(spec())
    assert container(deps["evaluator"])["imagePullPolicy"] == "IfNotPresent"
    assert "imagePullSecrets" not in pod(deps["evaluator"])

    s = spec(imagePullSecrets=[{"name": "tenant-reg"}], deliverer={"imagePullPolicy": "Never"})
    deps = deployments(s, pull_policy="Always", pull_secrets=("platform-reg", "tenant-reg"))
    assert container(deps["evaluator"])["imagePullPolicy"] == "Always"
    assert container(deps["deliverer"])["imagePullPolicy"] == "Never"  # the role's own wins
    for d in deps.values():
        assert pod(d)["imagePullSecrets"] == [{"name": "tenant-reg"}, {"name": "platform-reg"}]


def test_bad_pull_settings_are_rejected_with_the_field() -> None:
    with pytest.raises(ValueError, match="evaluator.imagePullPolicy"):
        spec(evaluator={"imagePullPolicy": "Sometimes"})
    with pytest.raises(ValueError, match="imagePullSecrets.0.name"):
        spec(imagePullSecrets=[{"name": "Not_A_Name"}])


def test_resources_default_per_role_unless_the_spec_sets_them() -> None:
    deps = deployments(spec(evaluator={"resources": {"limits": {"memory": "4Gi"}}}))
    assert container(deps["ingestor"])["resources"] == DEFAULT_RESOURCES["ingestor"]
    assert container(deps["deliverer"])["resources"] == DEFAULT_RESOURCES["deliverer"]
    # taken as written: no default request could exceed the tenant's limit
    assert container(deps["evaluator"])["resources"] == {"limits": {"memory": "4Gi"}}
    for r in DEFAULT_RESOURCES.values():
        assert set(r) == {"requests", "limits"} and "memory" in r["limits"]


def test_pods_run_non_root_with_a_read_only_root_and_a_tmp_volume() -> None:
    for d in deployments(spec()).values():
        p, c = pod(d), container(d)
        assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] > 0
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in p["volumes"]


def test_drift_is_a_changed_or_missing_desired_field_not_an_apiserver_default() -> None:
    objs = {o["kind"]: o for o in desired_objects(OWNER, spec(), "img:1", {})}
    role, service = objs["Role"], objs["Service"]
    live_service = {
        **service,
        "metadata": {**service["metadata"], "uid": "x", "resourceVersion": "7", "managedFields": []},
        "spec": {**service["spec"], "clusterIP": "10.96.0.9", "sessionAffinity": "None"},
        "status": {"loadBalancer": {}},
    }
    assert not drifted(service, live_service) and not needs_update(service, live_service)
    # a label added by someone else is fine; one of ours removed is not
    extra = {**live_service["metadata"], "labels": {**service["metadata"]["labels"], "team": "x"}}
    assert not drifted(service, {**live_service, "metadata": extra})
    fewer = {k: v for k, v in service["metadata"]["labels"].items() if k != "alertpipe.io/pipeline"}
    assert drifted(service, {**live_service, "metadata": {**live_service["metadata"], "labels": fewer}})
    # a port changed by hand
    ports = [{**service["spec"]["ports"][0], "port": 8081}]
    assert needs_update(service, {**live_service, "spec": {**live_service["spec"], "ports": ports}})
    # a Role widened by hand: an extra rule is drift even though ours is still there
    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    wider = {**role, "rules": [*role["rules"], secrets]}
    assert drifted(role, wider) and not drifted(role, dict(role))
    # the owner reference removed
    assert drifted(role, {**role, "metadata": {**role["metadata"], "ownerReferences": []}})


def test_latency_settings_reach_the_workers_command_lines_and_parse_there() -> None:
    import argparse

    from alertpipe.workers.evaluator.cli import add_arguments as evaluator_args
    from alertpipe.workers.ingestor.cli import add_arguments as ingestor_args

    def parsed(dep: dict[str, Any], add: Any) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add(parser)
        return parser.parse_args(container(dep)["command"][2:])  # after `alertpipe <role>`

    defaults = deployments(spec())
    assert parsed(defaults["ingestor"], ingestor_args).linger_ms == 1
    ev = parsed(defaults["evaluator"], evaluator_args)
    assert (ev.linger_ms, ev.checkpoint_interval) == (1, 1.0)
    assert "--linger-ms" not in container(defaults["deliverer"])["command"]  # it has no such flag

    tuned = deployments(spec(latency={"lingerMs": 0, "checkpointInterval": "2500ms"}))
    assert parsed(tuned["ingestor"], ingestor_args).linger_ms == 0
    ev = parsed(tuned["evaluator"], evaluator_args)
    assert (ev.linger_ms, ev.checkpoint_interval) == (0, 2.5)
    # a changed setting is a changed Deployment (the operator rolls it out)
    assert needs_update(tuned["evaluator"], defaults["evaluator"])


def test_bad_latency_settings_are_rejected_with_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="latency.lingerMs"):
        spec(latency={"lingerMs": -1})


def test_the_history_sink_runs_only_when_enabled_with_its_dsn_from_the_secret() -> None:
    assert "history" not in deployments(spec())
    s = spec(
        redis={"urlSecretRef": {"name": "redis", "key": "url"}},
        history={"enabled": True, "dsnSecretRef": {"name": "pg", "key": "dsn"}, "retentionDays": 7},
    )
    dep = deployments(s)["history"]
    c = container(dep)
    assert c["command"][:3] == ["alertpipe", "history", "sink"]
    assert c["command"][c["command"].index("--retention-days") + 1] == "7"
    assert "--metrics-port" in c["command"]
    env = {e["name"]: e for e in c["env"]}
    assert env["ALERTPIPE_HISTORY_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}
    assert not any("dsn" in part or "postgres" in part for part in c["command"])  # never in the args
    mounted = {v["secret"]["secretName"] for v in pod(dep)["volumes"] if "secret" in v}
    assert mounted == set()  # no Redis: the sink does not use it; the DSN is env from the kubelet
    assert c["resources"] == DEFAULT_RESOURCES["history"]
    assert "redis" in {v["secret"]["secretName"] for v in pod(deployments(s)["evaluator"])["volumes"]
                       if "secret" in v}


def test_history_enabled_without_a_dsn_is_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match=r"history\.dsnSecretRef"):
        spec(history={"enabled": True})
