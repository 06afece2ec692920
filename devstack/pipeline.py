"""Run a whole alertpipe pipeline on the devstack: CRDs, the operator, a pipeline, a receiver.

Shared by the end-to-end tests and the demo, so both exercise the same path a user takes: the
operator (a subprocess) reconciles an AlertPipeline into topics, the config ConfigMap and worker
Deployments; the local pod runner runs those pods as ``alertpipe <role>`` processes, each on a
loopback address of its own (``local_ip``); events are POSTed to the real ingestor and alerts reach
a local webhook receiver (tests/receivers) that checks the signature. A test harness, not product.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from devstack.podrunner import local_ip
from devstack.processes import free_port, port_open

__all__ = [
    "GROUP",
    "VERSION",
    "ThreadedReceiver",
    "apply_crds",
    "condition",
    "demo_pipeline",
    "demo_rule",
    "event",
    "http",
    "pod_address",
    "post_events",
    "run_operator",
    "wait_for",
]

GROUP, VERSION = "alertpipe.io", "v1alpha1"
ROOT = Path(__file__).resolve().parents[1]
Json = dict[str, Any]


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.05) -> Any:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def apply_keda_crds(api: client.ApiClient) -> None:
    """Install KEDA's own CRDs (provisioned from its Go module into the cache) and wait until they
    are Established: the apiserver then validates ScaledObjects as a cluster with KEDA does."""
    import yaml

    from devstack.cached import KEDA_CRDS, keda_crds_dir
    from devstack.stack import ensure_provisioned

    ensure_provisioned("keda-crds")
    apply_crds(api, [yaml.safe_load((keda_crds_dir() / name).read_text()) for name in KEDA_CRDS])


def apply_crds(api: client.ApiClient, docs: list[Json] | None = None) -> None:
    """Create or replace CRDs (default: the generated alertpipe ones) and wait until they are Established."""
    from alertpipe.operator.crdgen import build_crds

    ext = client.ApiextensionsV1Api(api)
    docs = list(build_crds().values()) if docs is None else docs
    for doc in docs:
        name = doc["metadata"]["name"]
        try:
            live = ext.read_custom_resource_definition(name)
            doc["metadata"]["resourceVersion"] = live.metadata.resource_version  # type: ignore[union-attr]
            ext.replace_custom_resource_definition(name, doc)  # type: ignore[arg-type]
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(doc)  # type: ignore[arg-type]

    def established() -> bool:
        for doc in docs:
            crd = ext.read_custom_resource_definition(doc["metadata"]["name"])
            conds = (crd.status.conditions if crd.status else None) or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(established, "CRDs Established", 60)


@contextmanager
def run_operator(
    kubeconfig: Path, namespace: str, log: Path, extra: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``alertpipe operator`` scoped to ``namespace`` (more flags in ``extra``), stopped on exit."""
    health = free_port()
    args = [
        sys.executable, "-m", "alertpipe", "--log-level=INFO", "operator",
        "--kubeconfig", str(kubeconfig), "--namespace", namespace,
        "--health-port", str(health), "--metrics-port", str(free_port()),
        "--image", "alertpipe:devstack", "--rule-debounce", "0.2",
        "--pod-address-annotation", "devstack.alertpipe.io/address", "--rollout-interval", "1", *extra,
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is None and port_open(health), "operator health endpoint", 60)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ThreadedReceiver:
    """tests.receivers' HTTP receiver on its own event loop in a thread, for synchronous callers."""

    def __init__(self) -> None:
        if str(ROOT) not in sys.path:  # tests/ is importable from the checkout root
            sys.path.insert(0, str(ROOT))
        from tests.receivers import HttpReceiver, start_http_receiver

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="receiver", daemon=True)
        self.thread.start()
        self.receiver: HttpReceiver = self.call(start_http_receiver())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.call(self.receiver.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def demo_pipeline(
    name: str, bootstrap: str, redis_url: str, hook_url: str, node_selector: dict[str, str]
) -> Json:
    """An AlertPipeline whose workers run as local pods and whose one channel is a local webhook."""
    placed = {"nodeSelector": node_selector}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AlertPipeline",
        "metadata": {"name": name},
        "spec": {
            "kafka": {
                "bootstrapServers": bootstrap,
                "topics": {"events": {"partitions": 3}, "alerts": {"partitions": 2}},
            },
            "redis": {"url": redis_url},
            "ingestor": placed,
            "evaluator": placed,
            "deliverer": placed,
            "ingest": {"apiKeysSecretRef": {"name": "ingest-keys", "key": "keys"}},
            "delivery": {"allowedNetworks": ["127.0.0.0/8", "::1/128"]},  # the local receivers only
            "channels": [
                {
                    "name": "ops",
                    "webhook": {"url": hook_url, "signingSecretRef": {"name": "hook", "key": "secret"}},
                    "retry": {"initialBackoff": "50ms", "maxBackoff": "500ms"},
                }
            ],
            "ruleSelector": {"matchLabels": {"alertpipe.io/pipeline": name}},
        },
    }


def demo_rule(pipeline: str) -> Json:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AlertRule",
        "metadata": {"name": "cpu-hot", "labels": {"alertpipe.io/pipeline": pipeline}},
        "spec": {
            "select": {"types": ["cpu"]},
            "threshold": {"condition": "value > 80"},
            "severity": "critical",
            "channels": ["ops"],
            "annotations": {"summary": "CPU {{ value }} on {{ deviceId }}"},
        },
    }


def condition(co: client.CustomObjectsApi, ns: str, pipeline: str, type_: str) -> Json | None:
    obj: Json = co.get_namespaced_custom_object(GROUP, VERSION, ns, "alertpipelines", pipeline)  # type: ignore[assignment]
    conds = obj.get("status", {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)


def pod_address(core: client.CoreV1Api, ns: str, pipeline: str, component: str) -> str:
    """The loopback address of the one live pod of a pipeline's role."""
    selector = f"alertpipe.io/pipeline={pipeline},app.kubernetes.io/component={component}"
    pods = [
        p for p in core.list_namespaced_pod(ns, label_selector=selector).items
        if p.metadata is not None and p.metadata.deletion_timestamp is None
    ]  # fmt: skip
    if len(pods) != 1 or pods[0].metadata is None or not pods[0].metadata.uid:
        raise AssertionError(f"expected one live {component} pod, found {len(pods)}")
    return local_ip(pods[0].metadata.uid)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except OSError:
        return 0, b""


def event(tenant: str, device: str, seq: int, ts_ms: int, value: float) -> Json:
    return {"tenant": tenant, "deviceId": device, "seq": seq, "ts": ts_ms, "type": "cpu", "value": value}


def post_events(ingestor: str, api_key: str, events: list[Json]) -> Json:
    """POST NDJSON to the ingestor at ``ingestor`` (host:port); the 202 answer's JSON."""
    status, body = http(
        "POST",
        f"http://{ingestor}/v1/events",
        "\n".join(json.dumps(e) for e in events).encode(),
        {"Authorization": f"Bearer {api_key}", "Content-Type": "application/x-ndjson"},
    )
    if status != 202:
        raise AssertionError(f"ingestor answered {status}: {body[:300]!r}")
    answer: Json = json.loads(body)
    return answer
