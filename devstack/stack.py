"""The stack: the devstack's components in one run directory, each started on first use.

``Stack`` owns processes (a test session, or the background supervisor of ``alertpipe devstack up``);
``StackEnv`` (devstack.stack_env, re-exported here) is what a client needs to use a stack someone
else runs, read from the env file that ``up`` writes (ALERTPIPE_DEVSTACK_ENV).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from devstack.cached import GO_BINARIES, kafka_cds_archive, kafka_libs, kwok_stages_dir, missing
from devstack.kafka import KafkaServer
from devstack.kafka_cluster import KafkaCluster
from devstack.kube import KubeCluster
from devstack.paths import bin_dir
from devstack.podrunner import PodRunner
from devstack.postgres import PostgresServer
from devstack.processes import StartError
from devstack.provision import provision
from devstack.redis import RedisServer
from devstack.secure import SecureKafkaServer, SecureRedisServer
from devstack.stack_env import ENV_KEYS, StackEnv
from devstack.webhookcert import make_webhook_cert

__all__ = ["ENV_KEYS", "Stack", "StackEnv", "new_run_dir", "pid_alive", "prune_run_dirs"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
C = TypeVar("C", bound="_Component")


class _Component(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...

def new_run_dir(root: Path, prefix: str) -> Path:
    d = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_run_dirs(root: Path, prefix: str, keep: int = 5) -> None:
    """Delete old run directories of finished sessions (their pid is the name's last part), newest kept."""
    if not root.is_dir():
        return
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and d.name.startswith(prefix + "-")), reverse=True)
    for d in dirs[keep:]:
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


class _Lazy(Generic[T]):
    """Start-once holder: the first caller starts the component, later callers get it (or its error)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: T | None = None
        self.error: BaseException | None = None

    def get(self, make: Callable[[], T]) -> T:
        with self.lock:
            if self.error is not None:
                raise StartError(f"failed earlier in this session: {self.error}")
            if self.value is None:
                try:
                    self.value = make()
                except BaseException as e:
                    self.error = e
                    raise
            return self.value


def ensure_provisioned(*needs: str) -> None:
    """Provision what is missing among ``needs`` (component names of devstack.provision)."""
    gone = missing()
    todo = [c for c in needs if c in gone]
    if "go" in needs and any(n in gone for n in GO_BINARIES):
        # a cold Go build takes ~16 minutes on 2 cores: not inside a test's timeout
        raise StartError(
            "the Go binaries (etcd, Kubernetes, kubectl, kwok, helm) are not built: run"
            " `alertpipe devstack provision`"
            " (or `make provision`) once; a cold build takes ~16 min on 2 cores"
        )
    if "kafka" in needs and ("kafka" in gone or "kafka-cds" in gone):
        todo += [c for c in ("kafka", "kafka-cds") if c not in todo]
    if todo:
        provision(tuple(todo))


class Stack:
    """Components in one run directory; each one is started the first time it is asked for."""

    def __init__(
        self, run_dir: Path, *, tie_to_parent: bool = True, kafka_jit: str = "fast", kafka_brokers: int = 1
    ) -> None:
        self.run_dir = run_dir
        self.tie_to_parent = tie_to_parent
        self.kafka_jit = kafka_jit
        self.kafka_brokers = kafka_brokers  # the "kafka" component of start(): one node, or a cluster
        self._redis: _Lazy[RedisServer] = _Lazy()
        self._kafka: _Lazy[KafkaServer] = _Lazy()
        self._cluster: _Lazy[KafkaCluster] = _Lazy()
        self._kube: _Lazy[KubeCluster] = _Lazy()
        self._pod_runner: _Lazy[PodRunner] = _Lazy()
        self._postgres: _Lazy[PostgresServer] = _Lazy()
        self._secure_kafka: _Lazy[SecureKafkaServer] = _Lazy()
        self._secure_redis: _Lazy[SecureRedisServer] = _Lazy()
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, fn: Callable[[], T]) -> T:
        t0 = time.monotonic()
        out = fn()
        self.timings[name] = round(time.monotonic() - t0, 2)
        return out

    def redis(self) -> RedisServer:
        def make() -> RedisServer:
            ensure_provisioned("redis")
            r = RedisServer(self.run_dir / "redis", tie_to_parent=self.tie_to_parent)
            try:
                self._timed("redis", r.start)
            except BaseException:
                r.stop()
                raise
            return r

        return self._redis.get(make)

    def postgres(self) -> PostgresServer:
        """The notification history's database (started only when a test or the demo asks for it)."""

        def make() -> PostgresServer:
            ensure_provisioned("postgres")
            p = PostgresServer(self.run_dir / "postgres", tie_to_parent=self.tie_to_parent)
            try:
                self._timed("postgres", p.start)
            except BaseException:
                p.stop()
                p.remove_data()
                raise
            return p

        return self._postgres.get(make)

    def kafka(self) -> KafkaServer:
        def make() -> KafkaServer:
            ensure_provisioned("kafka")
            k = KafkaServer(
                kafka_libs(),
                self.run_dir / "kafka",
                tie_to_parent=self.tie_to_parent,
                jit=self.kafka_jit,
                cds_archive=kafka_cds_archive(),
            )
            try:
                self._timed("kafka", k.start)
            except BaseException:
                k.stop()
                raise
            return k

        return self._kafka.get(make)

    def secure_kafka(self) -> SecureKafkaServer:
        """A second broker with SASL/SCRAM over TLS (opt-in: ``devstack up --secure``)."""

        def make() -> SecureKafkaServer:
            ensure_provisioned("kafka")
            return self._started("secure-kafka", SecureKafkaServer(
                kafka_libs(), self.run_dir / "secure-kafka", tie_to_parent=self.tie_to_parent,
                jit=self.kafka_jit, cds_archive=kafka_cds_archive(),
            ))  # fmt: skip

        return self._secure_kafka.get(make)

    def secure_redis(self) -> SecureRedisServer:
        """A second redis-server, TLS only, with an ACL user (opt-in: ``devstack up --secure``)."""

        def make() -> SecureRedisServer:
            ensure_provisioned("redis")
            server = SecureRedisServer(self.run_dir / "secure-redis", tie_to_parent=self.tie_to_parent)
            return self._started("secure-redis", server)

        return self._secure_redis.get(make)

    def kafka_cluster(self, brokers: int = 3, links: bool = False) -> KafkaCluster:
        """A KRaft cluster of ``brokers`` nodes (see devstack.kafka_cluster), apart from ``kafka()``;
        ``links``: clients reach each broker through a link the chaos suite can cut."""

        def make() -> KafkaCluster:
            ensure_provisioned("kafka")
            return self._started("kafka-cluster", KafkaCluster(
                kafka_libs(), self.run_dir / "kafka-cluster", brokers, tie_to_parent=self.tie_to_parent,
                jit=self.kafka_jit, cds_archive=kafka_cds_archive(), links=links))  # fmt: skip

        return self._cluster.get(make)

    def _started(self, name: str, comp: C) -> C:
        """``comp`` started (timed as ``name``), or stopped again and the error raised."""
        try:
            self._timed(name, comp.start)
        except BaseException:
            comp.stop()
            raise
        return comp

    def _cluster_of_size(self) -> KafkaCluster:
        return self.kafka_cluster(self.kafka_brokers)

    def kube(self) -> KubeCluster:
        def make() -> KubeCluster:
            ensure_provisioned("go", "kwok-stages")
            k = KubeCluster(
                self.run_dir / "kube", kwok_stages_dir() / "stages.yaml", tie_to_parent=self.tie_to_parent
            )
            try:
                self._timed("kube", k.start)
            except BaseException:
                k.stop()
                raise
            self.timings.update({f"kube/{n}": s for n, s in k.timings.items()})
            return k

        return self._kube.get(make)

    def pod_runner(self) -> PodRunner:
        """The local pod runner for this stack's ``devstack-local`` node (started with the control plane)."""

        def make() -> PodRunner:
            k = self.kube()
            runner = PodRunner(k.kubeconfig, self.run_dir / "pod-runner", tie_to_parent=self.tie_to_parent)
            runner.start()
            return runner

        return self._pod_runner.get(make)

    def helm(self) -> Path:
        ensure_provisioned("go")
        return bin_dir() / "helm"

    def kubectl(self) -> Path:
        ensure_provisioned("go")
        return bin_dir() / "kubectl"

    def start(self, components: tuple[str, ...] = ("redis", "kafka", "kube")) -> None:
        """Start the given components concurrently (each waits for what it depends on)."""
        getters: dict[str, Callable[[], object]] = {
            "redis": self.redis,
            "kafka": self.kafka if self.kafka_brokers == 1 else self._cluster_of_size,
            "kube": self.kube,
            "postgres": self.postgres,
            "secure-kafka": self.secure_kafka,
            "secure-redis": self.secure_redis,
        }
        with ThreadPoolExecutor(max_workers=len(components)) as pool:
            futures = [pool.submit(getters[c]) for c in components]
            errors = [f.exception() for f in futures]
        real = [e for e in errors if e is not None]
        if real:
            raise StartError("; ".join(str(e) for e in real))

    def env(self) -> dict[str, str]:
        out = {ENV_KEYS["run_dir"]: str(self.run_dir)}
        if self._kafka.value is not None:
            out[ENV_KEYS["kafka"]] = self._kafka.value.bootstrap
        if self._cluster.value is not None and self._kafka.value is None:
            out[ENV_KEYS["kafka"]] = self._cluster.value.bootstrap
        if self._redis.value is not None:
            out[ENV_KEYS["redis"]] = self._redis.value.url
        if self._kube.value is not None:
            out[ENV_KEYS["kubeconfig"]] = str(self._kube.value.kubeconfig)
            out[ENV_KEYS["helm"]] = str(bin_dir() / "helm")
            out[ENV_KEYS["kubectl"]] = str(bin_dir() / "kubectl")
            out[ENV_KEYS["webhook_cert_dir"]] = str(make_webhook_cert(self.run_dir / "webhook-cert"))
        if self._pod_runner.value is not None:
            out[ENV_KEYS["pod_runner_node"]] = self._pod_runner.value.node
        if self._postgres.value is not None:
            out[ENV_KEYS["postgres"]] = self._postgres.value.dsn
        if self._secure_kafka.value is not None:
            out[ENV_KEYS["secure_kafka"]] = self._secure_kafka.value.sasl_bootstrap
            out[ENV_KEYS["secure_kafka_ca"]] = str(self._secure_kafka.value.ca_file)
        if self._secure_redis.value is not None:
            out[ENV_KEYS["secure_redis"]] = self._secure_redis.value.url
        return out

    def stop(self) -> None:
        """Stop what was started, dependents first."""
        if self._pod_runner.value is not None:
            self._pod_runner.value.stop()
        comps = (self._kube.value, self._kafka.value, self._cluster.value, self._redis.value,
                 self._postgres.value, self._secure_kafka.value, self._secure_redis.value)
        for comp in comps:
            if comp is not None:
                try:
                    comp.stop()
                except Exception:
                    logger.exception("stopping %s", comp)
        if self._postgres.value is not None:
            self._postgres.value.remove_data()
