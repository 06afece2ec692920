"""The devstack's secured variants: Kafka with SASL/SCRAM-SHA-512 over TLS, Redis with TLS and an
ACL user, both on loopback with a throwaway CA made here (openssl, as the webhook's certificate).

Opt-in (``devstack up --secure``, or the ``secure_kafka``/``secure_redis`` pytest fixtures), so the
default stack starts as fast as before. The broker keeps a PLAINTEXT listener for its own
controller traffic and for the devstack's health check; clients under test use the SASL_SSL
listener, with the SCRAM user created when the storage is formatted (``kafka-storage format
--add-scram``). Redis listens on TLS only; its ``default`` user is off, so every client needs the
ACL user's password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from devstack.kafka import KafkaServer, broker_properties
from devstack.redis import RedisServer
from devstack.webhookcert import make_webhook_cert

__all__ = ["Credentials", "SecureKafkaServer", "SecureRedisServer", "make_tls"]

SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def make_tls(folder: Path) -> Path:
    """A CA (``ca.crt``) and a server certificate for 127.0.0.1/localhost (``tls.crt``, ``tls.key``,
    PKCS#8) in ``folder``; kept when already there."""
    return make_webhook_cert(folder)


def _password(folder: Path, name: str) -> str:
    """A random password kept in ``folder/name`` (so a restarted server keeps its users)."""
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


class SecureKafkaServer(KafkaServer):
    """One broker with a SASL_SSL listener (SCRAM-SHA-512) next to its PLAINTEXT one."""

    def __init__(self, libs: Path, run_dir: Path, *, sasl_port: int | None = None, **kw: object) -> None:
        from devstack.processes import free_port

        super().__init__(libs, run_dir, **kw)  # type: ignore[arg-type]
        self.sasl_port = sasl_port or free_port()
        self.tls_dir = run_dir / "tls"
        self.user = Credentials("alertpipe", _password(run_dir / "secrets", "scram-password"))

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    def client_options(self) -> dict[str, str]:
        """librdkafka options of a client of the SASL_SSL listener (credentials included)."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM,
            "sasl.username": self.user.username,
            "sasl.password": self.user.password,
            "ssl.ca.location": str(self.ca_file),
        }

    def _repick(self) -> None:
        from devstack.processes import free_port

        super()._repick()
        self.sasl_port = free_port()

    def _configure(self) -> None:
        make_tls(self.tls_dir)
        keystore = self.tls_dir / "keystore.pem"  # Kafka's PEM keystore: the key, then the chain
        keystore.write_text((self.tls_dir / "tls.key").read_text() + (self.tls_dir / "tls.crt").read_text())
        keystore.chmod(0o600)
        super()._configure()  # writes server.properties and formats the storage on first start
        base = broker_properties(self.port, self.controller_port, self.data_dir)
        extra = {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://127.0.0.1:{self.sasl_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://127.0.0.1:{self.sasl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.client.auth": "none",
        }
        lines = [ln for ln in base.splitlines() if ln.split("=", 1)[0] not in extra]
        (self.dir / "server.properties").write_text(
            "".join(f"{ln}\n" for ln in lines) + "".join(f"{k}={v}\n" for k, v in extra.items())
        )

    def _format_extra(self) -> list[str]:
        u = self.user
        return ["--add-scram", f"{SCRAM}=[name={u.username},password={u.password}]"]


class SecureRedisServer(RedisServer):
    """redis-server on a TLS port only, with the ``default`` user off and one ACL user."""

    def __init__(self, run_dir: Path, *, port: int | None = None, tie_to_parent: bool = True) -> None:
        super().__init__(run_dir, port=port, tie_to_parent=tie_to_parent)
        self.tls_dir = run_dir / "tls"
        self.user = Credentials("alertpipe", _password(run_dir / "secrets", "acl-password"))

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def url(self) -> str:
        u = self.user
        return f"rediss://{u.username}:{u.password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"

    def argv(self) -> list[str]:
        make_tls(self.tls_dir)
        conf = self.dir / "redis.conf"  # the ACL: a file, so the password is not on the command line
        self.dir.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "user default off\n"
            f"user {self.user.username} on >{self.user.password} ~* &* +@all\n"
        )
        conf.chmod(0o600)
        base = super().argv()  # the default server's settings, with its plain port closed
        base[base.index("--port") + 1] = "0"
        t = self.tls_dir
        return [
            base[0], str(conf), *base[1:],
            "--tls-port", str(self.port),
            "--tls-cert-file", str(t / "tls.crt"),
            "--tls-key-file", str(t / "tls.key"),
            "--tls-ca-cert-file", str(t / "ca.crt"),
            "--tls-auth-clients", "no",
        ]  # fmt: skip
