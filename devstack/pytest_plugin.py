"""pytest plugin of the devstack: session-scoped fixtures that start each real component once.

Fixtures start lazily: a session whose tests only ask for ``redis_url`` never starts Kafka. With
ALERTPIPE_DEVSTACK_ENV=<file written by `alertpipe devstack up`> the endpoint fixtures reuse that
running stack (a component that stack lacks is started by the session as usual); ``kafka_server`` /
``redis_server`` (the handles tests stop and restart) then start a private instance, so a restart
test never bounces a stack other sessions share.

After every test, a component a test left stopped is started again, so one failing restart test
cannot take the rest of the session down with it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.kafka import KafkaServer
from devstack.kafka_cluster import KafkaCluster
from devstack.kube import LOCAL_NODE_LABEL, KubeCluster
from devstack.paths import runs_dir
from devstack.postgres import PostgresServer
from devstack.processes import StartError, install_signal_handlers, wait_until
from devstack.redis import RedisServer
from devstack.secure import SecureKafkaServer, SecureRedisServer
from devstack.stack import ENV_KEYS, Stack, StackEnv, new_run_dir, prune_run_dirs

ENV_VAR = "ALERTPIPE_DEVSTACK_ENV"
_restartable: list[KafkaServer | KafkaCluster | RedisServer | PostgresServer] = []


def pytest_configure(config: pytest.Config) -> None:
    install_signal_handlers()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    for comp in _restartable:
        if comp.process is not None and not comp.running():
            comp.start()


@pytest.fixture(scope="session")
def devstack_env() -> StackEnv | None:
    """The running stack named by ALERTPIPE_DEVSTACK_ENV, or None (this session starts its own)."""
    path = os.environ.get(ENV_VAR)
    return StackEnv.load(Path(path)) if path else None


@pytest.fixture(scope="session")
def devstack() -> Iterator[Stack]:
    """This session's own stack (run directory under .devstack/runs/); stopped at the session's end."""
    root = runs_dir()
    prune_run_dirs(root, "pytest")
    stack = Stack(new_run_dir(root, "pytest"))
    try:
        yield stack
    finally:
        _restartable.clear()
        stack.stop()


@pytest.fixture(scope="session")
def kafka_server(devstack: Stack) -> KafkaServer:
    """A broker this session owns: ``.bootstrap``, ``.stop()``, ``.start()`` (same port and data)."""
    k = devstack.kafka()
    if k not in _restartable:
        _restartable.append(k)
    return k


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, devstack_env: StackEnv | None) -> str:
    """``127.0.0.1:PORT`` of a real single-node KRaft Kafka."""
    if devstack_env is not None and devstack_env.has("kafka"):
        return devstack_env.check_kafka()
    server: KafkaServer = request.getfixturevalue("kafka_server")
    return server.bootstrap


@pytest.fixture(scope="session")
def kafka_cluster(devstack: Stack) -> KafkaCluster:
    """Three KRaft brokers this session owns (RF 3, min.insync.replicas 2): ``.kill(n)``, ``.restart(n)``;
    clients come through links: ``.cut(n)`` / ``.heal(n)`` partition them from broker n."""
    c = devstack.kafka_cluster(3, links=True)
    if c not in _restartable:
        _restartable.append(c)
    return c


@pytest.fixture(scope="session")
def redis_server(devstack: Stack) -> RedisServer:
    """A redis-server this session owns: ``.url``, ``.restart()`` (``crash=True`` for SIGKILL)."""
    r = devstack.redis()
    if r not in _restartable:
        _restartable.append(r)
    return r


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, devstack_env: StackEnv | None) -> str:
    """``redis://127.0.0.1:PORT/0`` of a real redis-server (AOF on)."""
    if devstack_env is not None and devstack_env.has("redis"):
        return devstack_env.check_redis()
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture(scope="session")
def secure_kafka(devstack: Stack) -> SecureKafkaServer:
    """A broker with a SASL_SSL listener (SCRAM-SHA-512, the devstack's CA): ``.sasl_bootstrap``,
    ``.user``, ``.ca_file``, ``.client_options()``. Started only for the tests that ask for it."""
    return devstack.secure_kafka()


@pytest.fixture(scope="session")
def secure_redis(devstack: Stack) -> SecureRedisServer:
    """A redis-server on TLS only with an ACL user: ``.url`` (rediss://user:password@...), ``.user``."""
    return devstack.secure_redis()


@pytest.fixture(scope="session")
def postgres_server(devstack: Stack) -> PostgresServer:
    """A PostgreSQL server this session owns: ``.dsn``, ``.restart()`` (``crash=True`` for SIGKILL)."""
    p = devstack.postgres()
    if p not in _restartable:
        _restartable.append(p)
    return p


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest, devstack_env: StackEnv | None) -> str:
    """``postgresql://USER@127.0.0.1:PORT/alertpipe`` of a real PostgreSQL (Debian's package)."""
    if devstack_env is not None and devstack_env.has("postgres"):
        return devstack_env.get("postgres")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.dsn


@pytest.fixture(scope="session")
def kube_cluster(devstack: Stack) -> KubeCluster:
    """This session's own control plane (etcd, apiserver, controllers, scheduler, kwok nodes)."""
    return devstack.kube()


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest, devstack_env: StackEnv | None) -> Path:
    """Path of a kubeconfig (admin token) for a real kube-apiserver with kwok nodes Ready."""
    if devstack_env is not None and devstack_env.has("kubeconfig"):
        return devstack_env.check_kube()
    cluster: KubeCluster = request.getfixturevalue("kube_cluster")
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def helm_bin(devstack: Stack) -> Path:
    """Path of the helm binary built by the devstack (pass ``--kubeconfig`` to it)."""
    return devstack.helm()


@pytest.fixture(scope="session")
def kubectl_bin(devstack: Stack) -> Path:
    """Path of the kubectl binary built by the devstack at its Kubernetes version (pass ``--kubeconfig``)."""
    return devstack.kubectl()


@dataclass(frozen=True)
class LocalPods:
    """Where pods must go to run as local processes: put ``node_selector`` in the pod template."""

    node: str
    node_selector: dict[str, str]


@pytest.fixture(scope="session")
def pod_runner(request: pytest.FixtureRequest, devstack_env: StackEnv | None) -> LocalPods:
    """The local pod runner is active: pods bound to ``.node`` run as local processes on 127.0.0.1."""
    selector = {LOCAL_NODE_LABEL[0]: LOCAL_NODE_LABEL[1]}
    if devstack_env is not None and devstack_env.has("kubeconfig"):
        if ENV_KEYS["pod_runner_node"] not in devstack_env.values:
            raise StartError("the running devstack has no pod runner (started with --no-pod-runner?)")
        return LocalPods(devstack_env.values[ENV_KEYS["pod_runner_node"]], selector)
    stack: Stack = request.getfixturevalue("devstack")
    return LocalPods(stack.pod_runner().node, selector)


@pytest.fixture
def namespace(kubeconfig: Path, unique: str) -> Iterator[str]:
    """A fresh namespace (its default ServiceAccount exists, so pods can be created); deleted afterwards."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=unique)))

    def has_default_sa() -> bool:
        return any(
            sa.metadata and sa.metadata.name == "default"
            for sa in api.list_namespaced_service_account(unique).items
        )

    wait_until(has_default_sa, f"namespace {unique}: default ServiceAccount", 60)
    try:
        yield unique
    finally:
        try:
            api.delete_namespace(unique)
        except client.ApiException as e:
            if e.status != 404:
                raise
        api.api_client.close()


@pytest.fixture
def unique() -> str:
    """A short unique lowercase name (a valid topic, group, namespace or key prefix)."""
    return "t" + uuid.uuid4().hex[:10]
