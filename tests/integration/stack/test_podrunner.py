"""The local pod runner: a Deployment's pod really runs on 127.0.0.1 with its env and volumes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devstack.kube import kube_client
from devstack.podrunner import local_ip
from devstack.processes import free_port, port_open, wait_until
from devstack.pytest_plugin import LocalPods

pytestmark = pytest.mark.integration

# A tiny HTTP server: answers with what the pod gave it (env from literals, a ConfigMap, a Secret,
# the downward API) and the content of its mounted ConfigMap file.
SERVER = """
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "greeting": os.environ.get("GREETING"),
            "token": os.environ.get("TOKEN"),
            "pod": os.environ.get("POD_NAME"),
            "pod_ip": os.environ.get("POD_IP"),
            "literal": os.environ.get("LITERAL"),
            "file": open(sys.argv[2]).read(),
            "cwd": os.getcwd(),
            "bind": os.environ.get("ALERTPIPE_BIND_HOST"),
        }).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer((os.environ["POD_IP"], int(sys.argv[1])), H).serve_forever()
"""


def local_server_deployment(name: str, port: int, selector: dict[str, str]) -> client.V1Deployment:
    d = client.V1Deployment.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeSelector": selector,
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "web",
                                "image": "registry.invalid/alertpipe:dev",
                                "command": ["python", "-c", SERVER],
                                "args": ["$(PORT)", "/etc/site/index.txt"],
                                "env": [
                                    {"name": "PORT", "value": str(port)},
                                    {"name": "LITERAL", "value": "plain"},
                                    {
                                        "name": "GREETING",
                                        "valueFrom": {"configMapKeyRef": {"name": "site", "key": "greeting"}},
                                    },
                                    {
                                        "name": "TOKEN",
                                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                                    },
                                    {
                                        "name": "POD_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    },
                                    {
                                        "name": "POD_IP",
                                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                    },
                                ],
                                "volumeMounts": [{"name": "site", "mountPath": "/etc/site"}],
                            }
                        ],
                        "volumes": [{"name": "site", "configMap": {"name": "site"}}],
                    },
                },
            },
        }
    )
    assert d is not None
    return d


def get_json(host: str, port: int) -> Any:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def test_deployment_pod_serves_locally_and_scaling_to_zero_stops_it(
    pod_runner: LocalPods, kubeconfig: Path, namespace: str
) -> None:
    api = kube_client(kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="site"),
            data={"greeting": "hello", "index.txt": "from a ConfigMap"},
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"token": "s3cret"}),
    )
    port = free_port()
    apps.create_namespaced_deployment(
        namespace, local_server_deployment("web", port, pod_runner.node_selector)
    )

    wait_until(
        lambda: bool(core.list_namespaced_pod(namespace, label_selector="app=web").items), "pod created", 60
    )
    pod = core.list_namespaced_pod(namespace, label_selector="app=web").items[0]
    assert pod.metadata is not None and pod.metadata.uid is not None
    ip = local_ip(pod.metadata.uid)
    assert ip.startswith("127.") and ip != "127.0.0.1"  # each pod has its own loopback address
    wait_until(lambda: port_open(port, ip), f"the pod's server on {ip}:{port}", 120)
    pod = core.read_namespaced_pod(str(pod.metadata.name), namespace)  # the copy above predates scheduling
    assert pod.spec is not None and pod.spec.node_name == pod_runner.node
    got = get_json(ip, port)
    assert got["greeting"] == "hello"
    assert got["token"] == "s3cret"
    assert got["literal"] == "plain"
    assert pod.metadata is not None and got["pod"] == pod.metadata.name
    assert got["pod_ip"] == ip and got["bind"] == ip
    assert got["file"] == "from a ConfigMap"  # /etc/site mapped to the materialised volume

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_until(lambda: not port_open(port, ip), "the local process stopped after scaling to 0", 90)
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items, "pod deleted", 90
    )
    api.close()


CRASHER = "import os, redis; redis.Redis.from_url(os.environ['R']).incr(os.environ['K']); raise SystemExit(3)"


def test_a_crashing_container_is_restarted_under_restart_policy_always(
    pod_runner: LocalPods, kubeconfig: Path, namespace: str, redis_url: str, unique: str
) -> None:
    import redis

    api = kube_client(kubeconfig)
    apps = client.AppsV1Api(api)
    d = client.V1Deployment.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "crasher"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "crasher"}},
                "template": {
                    "metadata": {"labels": {"app": "crasher"}},
                    "spec": {
                        "nodeSelector": pod_runner.node_selector,
                        "containers": [
                            {
                                "name": "c",
                                "image": "registry.invalid/alertpipe:dev",
                                "command": ["python", "-c", CRASHER],
                                "env": [
                                    {"name": "R", "value": redis_url},
                                    {"name": "K", "value": f"{unique}:starts"},
                                ],
                            }
                        ],
                    },
                },
            },
        }
    )
    assert d is not None
    apps.create_namespaced_deployment(namespace, d)
    r = redis.Redis.from_url(redis_url)
    wait_until(lambda: int(r.get(f"{unique}:starts") or 0) >= 3, "the container started three times", 120)
    apps.delete_namespaced_deployment("crasher", namespace)
    api.close()


def test_the_copyable_example_runs(pod_runner: LocalPods, kubeconfig: Path, namespace: str) -> None:
    import urllib.request

    import yaml
    from kubernetes import utils

    from devstack.podrunner import local_ip

    example = Path(__file__).resolve().parents[3] / "examples" / "devstack" / "local-pod.yaml"
    api = kube_client(kubeconfig)
    for doc in yaml.safe_load_all(example.read_text()):
        utils.create_from_dict(api, doc, namespace=namespace)  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    wait_until(lambda: bool(core.list_namespaced_pod(namespace, label_selector="app=hello").items), "pod", 60)
    pod = core.list_namespaced_pod(namespace, label_selector="app=hello").items[0]
    assert pod.metadata is not None and pod.metadata.uid
    ip = local_ip(pod.metadata.uid)
    wait_until(lambda: port_open(8080, host=ip), f"the example serving on {ip}:8080", 120)
    with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=5) as resp:  # noqa: S310 - loopback
        assert b"hello from a pod run by the devstack" in resp.read()
    api.close()
