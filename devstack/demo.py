"""``alertpipe devstack demo``: bring the stack up, show it healthy, tear it down.

For now the demo checks the components themselves; later issues grow it into the full pipeline
demo by appending steps: a step is ``(title, fn)`` where ``fn(ctx) -> str`` returns a one-line
result and raises on failure. ``run_demo(steps=[*DEFAULT_STEPS, my_step])`` runs them in order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devstack import control
from devstack.stack import StackEnv

__all__ = ["DEFAULT_STEPS", "DemoContext", "Step", "run_demo"]


@dataclass
class DemoContext:
    env: StackEnv
    console: Console
    scratch: dict[str, Any] = field(default_factory=dict)  # steps may pass things to later steps

    @property
    def kafka_bootstrap(self) -> str:
        return self.env.get("kafka")

    @property
    def redis_url(self) -> str:
        return self.env.get("redis")

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env.get("kubeconfig"))


Step = tuple[str, Callable[[DemoContext], str]]


def nodes_ready(ctx: DemoContext) -> str:
    from kubernetes import client

    from devstack.kube import kube_client

    api = kube_client(ctx.kubeconfig)
    try:
        nodes = client.CoreV1Api(api).list_node().items
        version = client.VersionApi(api).get_code().git_version
    finally:
        api.close()
    names = {str(n.metadata.name if n.metadata else "?") for n in nodes}
    ready = [
        str(n.metadata.name if n.metadata else "?")
        for n in nodes
        if any(
            c.type == "Ready" and c.status == "True"
            for c in ((n.status.conditions if n.status else None) or [])
        )
    ]
    if len(ready) != len(nodes) or not nodes:
        raise RuntimeError(f"nodes not Ready: {sorted(names - set(ready))}")
    return f"Kubernetes {version}: {len(ready)} kwok nodes Ready ({', '.join(sorted(ready))})"


def kafka_round_trip(ctx: DemoContext) -> str:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"demo-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": ctx.kafka_bootstrap, "log_level": 3})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        fut.result(timeout=30)
    # log_level 3: keep librdkafka's transient warnings (coordinator still loading) out of the summary
    producer = Producer(
        {"bootstrap.servers": ctx.kafka_bootstrap, "enable.idempotence": True, "acks": "all", "log_level": 3}
    )
    t0 = time.monotonic()
    for i in range(100):
        producer.produce(topic, key=f"device-{i % 7}", value=f"hello {i}")
    if producer.flush(30) != 0:
        raise RuntimeError("messages not acknowledged within 30 s")
    consumer = Consumer(
        {
            "bootstrap.servers": ctx.kafka_bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    got = 0
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while got < 100 and time.monotonic() < deadline:
            got += sum(1 for m in consumer.consume(100, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    for fut in admin.delete_topics([topic]).values():
        fut.result(timeout=30)
    if got != 100:
        raise RuntimeError(f"consumed {got} of 100 messages")
    took = time.monotonic() - t0
    return f"Kafka {ctx.kafka_bootstrap}: 100 keyed messages produced and consumed in {took:.2f}s"


def redis_ping(ctx: DemoContext) -> str:
    import redis

    r = redis.Redis.from_url(ctx.redis_url)
    try:
        r.ping()
        key = f"demo:{uuid.uuid4().hex[:8]}"
        r.set(key, "ok", ex=10)
        value = r.get(key)
        aof = r.config_get("appendonly").get("appendonly")
        version = r.info("server")["redis_version"]
    finally:
        r.close()
    if value != b"ok":
        raise RuntimeError(f"SET/GET returned {value!r}")
    return f"Redis {version} {ctx.redis_url}: PING, SET/GET ok (appendonly={aof})"


def local_pod(ctx: DemoContext) -> str:
    """A Deployment scheduled onto devstack-local: the pod runner runs its command on 127.0.0.1."""
    import urllib.request

    from kubernetes import client

    from devstack.kube import LOCAL_NODE_LABEL, kube_client
    from devstack.processes import free_port, port_open, wait_until

    ns, port = f"demo-{uuid.uuid4().hex[:6]}", free_port()
    api = kube_client(ctx.kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    t0 = time.monotonic()
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        wait_until(
            lambda: bool(
                core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items
            ),
            "default ServiceAccount",
            60,
        )
        body = client.V1Deployment.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "hello"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "hello"}},
                    "template": {
                        "metadata": {"labels": {"app": "hello"}},
                        "spec": {
                            "nodeSelector": {LOCAL_NODE_LABEL[0]: LOCAL_NODE_LABEL[1]},
                            "containers": [
                                {
                                    "name": "web",
                                    "image": "registry.invalid/hello:1",
                                    "command": [
                                        "python",
                                        "-m",
                                        "http.server",
                                        str(port),
                                        "--bind",
                                        "127.0.0.1",
                                    ],
                                }
                            ],
                        },
                    },
                },
            }
        )
        if body is None:
            raise RuntimeError("could not build the Deployment body")
        apps.create_namespaced_deployment(ns, body)
        wait_until(lambda: port_open(port), f"the pod serving on 127.0.0.1:{port}", 90)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:  # noqa: S310 - loopback
            status = resp.status
    finally:
        core.delete_namespace(ns)
        api.close()
    return (
        f"pod runner: Deployment hello on devstack-local served HTTP {status} on 127.0.0.1:{port} after "
        + (f"{time.monotonic() - t0:.1f}s")
    )


DEFAULT_STEPS: list[Step] = [
    ("Kubernetes", nodes_ready),
    ("Kafka", kafka_round_trip),
    ("Redis", redis_ping),
    ("Local pods", local_pod),
]


def run_demo(
    console: Console | None = None, steps: Sequence[Step] = DEFAULT_STEPS, keep: bool = False
) -> int:
    """Use the running stack (or start one, stopped at the end unless ``keep``); run the steps."""
    console = console or Console()
    started_here = not control.running_state()
    t0 = time.monotonic()
    with console.status(
        "bringing the devstack up (Kafka, Redis, etcd, kube-apiserver, controllers, kwok) ..."
    ):
        state = control.up()
    how = "started" if started_here else "already running"
    console.print(f"[bold]devstack[/] {how} in {time.monotonic() - t0:.1f}s")
    ctx = DemoContext(env=StackEnv.load(control.env_file()), console=console)
    table = Table(title="alertpipe devstack demo", show_lines=False)
    table.add_column("component")
    table.add_column("check")
    table.add_column("s", justify="right")
    failed = 0
    try:
        for title, fn in steps:
            t1 = time.monotonic()
            try:
                result = f"[green]✔[/] {fn(ctx)}"
            except Exception as e:
                failed += 1
                result = f"[red]✘ {type(e).__name__}: {e}[/]"
            table.add_row(title, result, f"{time.monotonic() - t1:.2f}")
        console.print(table)
        timings = state.get("timings", {})
        if started_here and timings:
            console.print(
                "start-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if "/" not in k)
            )
    finally:
        if started_here and not keep:
            with console.status("tearing the devstack down ..."):
                control.down()
            console.print("devstack stopped.")
        elif keep or not started_here:
            console.print('devstack left running: `eval "$(alertpipe devstack env)"` to use it')
    return 1 if failed else 0
