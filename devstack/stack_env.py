"""What a client needs to use a stack someone else runs: the endpoints ``alertpipe devstack up``
writes to its env file (ALERTPIPE_DEVSTACK_ENV), each with a check that it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from devstack.kafka import kafka_healthy
from devstack.kube import kube_client
from devstack.processes import StartError
from devstack.redis import redis_ping
from devstack.versions import parse_env_file

__all__ = ["ENV_KEYS", "StackEnv"]

ENV_KEYS = {
    "kafka": "ALERTPIPE_KAFKA_BOOTSTRAP",
    "redis": "ALERTPIPE_REDIS_URL",
    "kubeconfig": "KUBECONFIG",
    "helm": "ALERTPIPE_HELM",
    "kubectl": "ALERTPIPE_KUBECTL",
    "webhook_cert_dir": "ALERTPIPE_WEBHOOK_CERT_DIR",
    "run_dir": "ALERTPIPE_DEVSTACK_RUN_DIR",
    "pid": "ALERTPIPE_DEVSTACK_PID",
    "pod_runner_node": "ALERTPIPE_POD_RUNNER_NODE",
    "postgres": "ALERTPIPE_POSTGRES_DSN",
    "secure_kafka": "ALERTPIPE_SECURE_KAFKA_BOOTSTRAP",  # SASL_SSL (devstack.secure)
    "secure_kafka_ca": "ALERTPIPE_SECURE_KAFKA_CA",
    "secure_redis": "ALERTPIPE_SECURE_REDIS_URL",  # rediss:// with the ACL user's password
}



@dataclass(frozen=True)
class StackEnv:
    """Endpoints of a stack started by ``alertpipe devstack up`` (read from its env file)."""

    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> StackEnv:
        try:
            return cls(parse_env_file(path.read_text()))
        except OSError as e:
            raise StartError(f"ALERTPIPE_DEVSTACK_ENV={path}: cannot read it ({e.strerror})") from None

    def has(self, key: str) -> bool:
        return ENV_KEYS[key] in self.values

    def get(self, key: str) -> str:
        name = ENV_KEYS[key]
        if name not in self.values:
            raise StartError(f"the devstack env file has no {name}: is that component up?")
        return self.values[name]

    def check_kafka(self) -> str:
        bootstrap = self.get("kafka")
        try:
            ok = kafka_healthy(bootstrap)
        except Exception as e:
            raise StartError(
                f"Kafka at {bootstrap} (from ALERTPIPE_DEVSTACK_ENV) does not answer: {e}"
            ) from None
        if not ok:
            raise StartError(f"Kafka at {bootstrap} (from ALERTPIPE_DEVSTACK_ENV) lists no broker")
        return bootstrap

    def check_kube(self) -> Path:
        path = Path(self.get("kubeconfig"))
        if not path.exists():
            raise StartError(f"kubeconfig {path} (from ALERTPIPE_DEVSTACK_ENV) does not exist")
        from kubernetes import client

        api = kube_client(path)
        try:
            client.VersionApi(api).get_code(_request_timeout=5)
        except Exception as e:
            raise StartError(
                f"the apiserver of {path} (from ALERTPIPE_DEVSTACK_ENV) does not answer: {e}"
            ) from None
        finally:
            api.close()
        return path

    def check_redis(self) -> str:
        url = self.get("redis")
        try:
            redis_ping(url)
        except Exception as e:
            raise StartError(f"Redis at {url} (from ALERTPIPE_DEVSTACK_ENV) does not answer: {e}") from None
        return url

    def check_postgres(self) -> str:
        dsn = self.get("postgres")
        import psycopg

        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            raise StartError(f"PostgreSQL at {dsn} (ALERTPIPE_DEVSTACK_ENV) does not answer: {e}") from None
        return dsn
