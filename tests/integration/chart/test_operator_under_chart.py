"""The real `alertpipe operator`, run the way the chart's Deployment says, with nothing but the rights
the chart grants: the Deployment's args and env, its Secret volume materialised as the kubelet would,
and a token of the chart's ServiceAccount. It must reconcile a pipeline (so the RBAC is enough, not just
small), keep its peering object alive, and serve the admission webhook over TLS with the chart's
certificate, checked against the chart's CA and the Service's DNS name as the apiserver would.

Kwok pods run nothing, so the operator runs here as a local process bound to 127.0.0.1; the webhook is
called on loopback directly (the apiserver would dial a fake pod IP).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devstack.processes import free_port, wait_until
from tests.integration.chart.helpers import Release, base_values
from tests.integration.tooling.helm import ROOT

# helm --wait, kwok scheduling and a reconcile on a loaded 2-core machine: more than the default 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

G, V = "alertpipe.io", "v1alpha1"


def sa_kubeconfig(api: client.ApiClient, admin_kubeconfig: Path, namespace: str, sa: str, out: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (TokenRequest), like a pod's mounted token."""
    core: Any = client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(
        sa,
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=3600)),
    ).status.token
    cfg = yaml.safe_load(admin_kubeconfig.read_text())
    cfg["users"] = [{"name": "sa", "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = "sa"
        ctx["context"]["namespace"] = namespace
    out.write_text(yaml.safe_dump(cfg))
    return out


class LocalPod:
    """Runs the operator container of a Deployment as a local process, resolving what the kubelet would."""

    def __init__(self, api: client.ApiClient, namespace: str, deployment: str, workdir: Path) -> None:
        apps: Any = client.AppsV1Api(api)
        core: Any = client.CoreV1Api(api)
        pod_spec = apps.read_namespaced_deployment(deployment, namespace).spec.template.spec
        (container,) = pod_spec.containers
        self.args: list[str] = list(container.args)
        self.env = {"PYTHONUNBUFFERED": "1"}
        pod_name = f"{deployment}-local-{uuid.uuid4().hex[:5]}"
        for e in container.env or []:
            if e.value is not None:
                self.env[e.name] = e.value
            elif e.value_from and e.value_from.field_ref:
                path = e.value_from.field_ref.field_path
                self.env[e.name] = {"metadata.name": pod_name, "metadata.namespace": namespace}[path]
        # Secret volumes: written out as the kubelet's one-file-per-key layout; args point there.
        volumes = {v.name: v for v in pod_spec.volumes or []}
        for mount in container.volume_mounts or []:
            vol = volumes[mount.name]
            if vol.secret is None:
                continue
            folder = workdir / mount.name
            folder.mkdir()
            secret = core.read_namespaced_secret(vol.secret.secret_name, namespace)
            for key, b64 in secret.data.items():
                (folder / key).write_bytes(base64.b64decode(b64))
            self.args = [a.replace(mount.mount_path, str(folder)) for a in self.args]
        self.log = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, kubeconfig: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | self.env
        cmd = [sys.executable, "-m", "alertpipe", *self.args, "--kubeconfig", str(kubeconfig)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def alive(self) -> bool:
        """True while running; fails the test at once (not caught by wait_until) when it exited."""
        if self.proc is None or self.proc.poll() is not None:
            pytest.fail(f"operator exited:\n{self.output()[-4000:]}")
        return True

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def admission_review(port: int, path: str, ca: Path, hostname: str, obj: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview over TLS to 127.0.0.1, verifying the certificate for `hostname`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    kind = obj["kind"]
    plural = {"AlertPipeline": "alertpipelines", "AlertRule": "alertrules"}[kind]
    gvk = {"group": G, "version": V, "kind": kind}
    gvr = {"group": G, "version": V, "resource": plural}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "chart-test"},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=hostname
    )
    try:
        conn.request("POST", path, body=json.dumps(review), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body[:500]
    finally:
        conn.close()
    out: dict[str, Any] = json.loads(body)["response"]
    return out


@pytest.fixture
def local_pods() -> Iterator[list[LocalPod]]:
    pods: list[LocalPod] = []
    yield pods
    for p in pods:
        p.stop()


def test_operator_runs_with_the_charts_args_rbac_and_certificate(
    release: Release,
    api: client.ApiClient,
    namespace: str,
    kubeconfig: Path,
    kafka_bootstrap: str,
    tmp_path: Path,
    local_pods: list[LocalPod],
) -> None:
    ns = namespace
    health, metrics, webhook = free_port(), free_port(), free_port()
    release.install(
        {
            **base_values(ns),
            "operator": {
                "watchNamespaces": [ns],
                "healthPort": health,
                "metricsPort": metrics,
                # Loopback only: this pod is a local process on a shared machine.
                "extraArgs": ["--bind", "127.0.0.1", "--webhook-addr", "127.0.0.1", "--rule-debounce", "0.1"],
            },
            "webhook": {**base_values(ns)["webhook"], "port": webhook},
        }
    )
    full = release.fullname
    pod = LocalPod(api, ns, full, tmp_path)
    local_pods.append(pod)
    pod.start(sa_kubeconfig(api, kubeconfig, ns, full, tmp_path / "sa-kubeconfig"))
    wait_until(lambda: pod.alive() and port_open(health) and port_open(webhook), "operator endpoints up", 90)

    # The admission webhook, over TLS with the chart's certificate, verified like the apiserver does.
    ca = tmp_path / "webhook-tls" / "ca.crt"
    service_dns = f"{full}-webhook.{ns}.svc"
    bad = {
        "apiVersion": f"{G}/{V}",
        "kind": "AlertRule",
        "metadata": {"name": "broken", "namespace": ns},
        "spec": {"threshold": {"condition": "value >"}, "channels": ["ops"]},
    }
    refused = admission_review(webhook, "/validate-alertrule", ca, service_dns, bad)
    assert refused["allowed"] is False
    assert "threshold.condition" in refused["status"]["message"], refused
    good = {**bad, "metadata": {"name": "fine", "namespace": ns}, "spec": {
        "threshold": {"condition": "value > 80"}, "channels": ["ops"], "severity": "critical"}}  # fmt: skip
    assert admission_review(webhook, "/validate-alertrule", ca, service_dns, good)["allowed"] is True

    # Reconciliation with only the chart's RBAC: topics, config, Deployments, Ready.
    co: Any = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(G, V, ns, "alertrules", {**good, "metadata": {
        "name": "cpu-high", "labels": {"team": "a"}}})  # fmt: skip
    co.create_namespaced_custom_object(G, V, ns, "alertpipelines", {
        "apiVersion": f"{G}/{V}", "kind": "AlertPipeline", "metadata": {"name": "main"},
        "spec": {
            "kafka": {"bootstrapServers": kafka_bootstrap, "topics": {"events": {"partitions": 2}}},
            "redis": {"url": "redis://127.0.0.1:9/0"},
            "channels": [{"name": "ops", "webhook": {"url": "http://127.0.0.1:9/hook"}}],
            "ruleSelector": {"matchLabels": {"team": "a"}},
        },
    })  # fmt: skip

    last: dict[str, Any] = {}

    def ready() -> bool:
        pod.alive()
        last.update(co.get_namespaced_custom_object(G, V, ns, "alertpipelines", "main").get("status", {}))
        return any(c["type"] == "Ready" and c["status"] == "True" for c in last.get("conditions") or [])

    try:
        wait_until(ready, "pipeline Ready=True under the chart's RBAC", 300)
    except Exception:
        pytest.fail(f"pipeline not Ready; status {json.dumps(last)}\noperator log:\n{pod.output()[-4000:]}")
    core: Any = client.CoreV1Api(api)
    cfg = json.loads(core.read_namespaced_config_map("main-config", ns).data["config.json"])
    assert [r["name"] for r in cfg["rules"]] == ["cpu-high"]
    apps: Any = client.AppsV1Api(api)
    assert {d.metadata.name for d in apps.list_namespaced_deployment(ns).items} >= {
        "main-ingestor", "main-evaluator", "main-deliverer"}  # fmt: skip
    worker = apps.read_namespaced_deployment("main-evaluator", ns).spec.template.spec.containers[0]
    assert worker.image == pod.env["ALERTPIPE_WORKER_IMAGE"], "workers must run the chart's image"

    # Peering: the operator keeps its identity (the pod name, POD_ID) in the chart's KopfPeering.
    def peered() -> bool:
        peering = co.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", full)
        return pod.env["POD_ID"] in (peering.get("status") or {})

    wait_until(peered, "operator listed in its KopfPeering", 60)
    # Metrics on the chart's metrics port.
    conn = http.client.HTTPConnection("127.0.0.1", metrics, timeout=5)
    conn.request("GET", "/metrics")
    assert b"alertpipe_operator_" in conn.getresponse().read()
    conn.close()

    pod.stop()
    log = pod.output()
    assert "Forbidden" not in log and " 403" not in log, log[-4000:]


def test_two_replicas_under_the_charts_peering_one_active_then_takeover(
    release: Release,
    api: client.ApiClient,
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
    local_pods: list[LocalPod],
) -> None:
    """replicaCount 2 as the chart wires it: both replicas join the peering object, one pauses in favour
    of the other, and takes over when the active one stops."""
    ns = namespace
    release.install(
        {
            **base_values(ns),
            "replicaCount": 2,
            "operator": {
                "watchNamespaces": [ns],
                "extraArgs": ["--bind", "127.0.0.1", "--metrics-port", "0"],
            },
            "webhook": {"enabled": False},
        }
    )
    full = release.fullname
    token_kubeconfig = sa_kubeconfig(api, kubeconfig, ns, full, tmp_path / "sa-kubeconfig")
    replicas: list[tuple[LocalPod, int]] = []
    for i in range(2):
        workdir = tmp_path / f"replica-{i}"
        workdir.mkdir()
        pod = LocalPod(api, ns, full, workdir)
        port = free_port()
        i_port = pod.args.index("--health-port") + 1
        pod.args[i_port] = str(port)  # two processes on one host: each its own health port
        local_pods.append(pod)
        replicas.append((pod, port))
        pod.start(token_kubeconfig)
    wait_until(lambda: all(p.alive() and port_open(port) for p, port in replicas), "replicas up", 90)

    co: Any = client.CustomObjectsApi(api)

    def peers() -> set[str]:
        body = co.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", full)
        return set((body.get("status") or {}).keys())

    ids = {pod.env["POD_ID"] for pod, _ in replicas}
    wait_until(lambda: peers() >= ids, "both replicas in the KopfPeering", 90)

    # Which replica acts shows in what it handles: Kopf logs each handled AlertRule event.
    handled = "rule_event' succeeded"
    rule = {"apiVersion": f"{G}/{V}", "kind": "AlertRule",
            "spec": {"threshold": {"condition": "value > 80"}, "channels": ["ops"]}}  # fmt: skip

    def add_rule(name: str) -> None:
        co.create_namespaced_custom_object(G, V, ns, "alertrules", {**rule, "metadata": {"name": name}})

    def handlers(p: LocalPod) -> int:
        return p.output().count(handled)

    add_rule("r1")
    wait_until(lambda: any(handlers(p) for p, _ in replicas), "one replica handles r1", 90)
    acting = [p for p, _ in replicas if handlers(p)]
    assert len(acting) == 1, "both replicas acted at once"
    (active,) = acting
    (standby,) = [p for p, _ in replicas if p is not active]
    add_rule("r2")  # by the time r2 is handled, a second active replica would have handled r1 as well
    before = handlers(active)
    wait_until(lambda: handlers(active) > before, "the active replica handles r2", 60)
    assert handlers(standby) == 0, "both replicas acted at once"

    active.stop()
    wait_until(lambda: active.env["POD_ID"] not in peers(), "stopped replica leaves the peering", 60)
    add_rule("r3")
    wait_until(lambda: standby.alive() and handlers(standby) > 0, "the standby takes over", 120)
