"""A redis-server on loopback with persistence chosen on purpose: AOF on (appendfsync everysec), no RDB
snapshots. A graceful restart loses nothing; a crash (``restart(crash=True)``, SIGKILL) may lose up to
the last second of writes, exactly as a production Redis configured this way would."""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack.processes import ManagedProcess, OnePortServer, StartError, free_port, port_open

__all__ = ["RedisServer", "redis_ping"]


class RedisServer(OnePortServer):
    def __init__(self, run_dir: Path, *, port: int | None = None, tie_to_parent: bool = True) -> None:
        self.dir = run_dir
        self.port = port or free_port()
        self._may_repick = port is None  # see KafkaServer: a port taken before we bound it
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        exe = shutil.which("redis-server")
        if exe is None:
            raise StartError("redis: redis-server not found; run `alertpipe devstack provision`")
        return [
            exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir / "data"),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
            "--databases", "16",
        ]  # fmt: skip

    def _start_once(self, timeout: float) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "redis", self.argv(), self.dir / "redis.log", tie_to_parent=self.tie_to_parent, stop_timeout=15
        )
        self.process.start()
        self.process.wait_healthy(lambda: port_open(self.port), f"listening on port {self.port}", timeout)
        self.process.wait_healthy(self.healthy, "answering PING (AOF loaded)", timeout)

    def healthy(self) -> bool:
        """Our server answers (its process id, not another process that took the port) and has
        finished loading its AOF (INFO answers while loading; most commands get LOADING then)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            pid = int(client.info("server")["process_id"])
            loading = int(client.info("persistence").get("loading", 0))
        finally:
            client.close()
        if self.process is None or pid != self.process.pid:
            raise StartError(f"{self.url} is answered by process {pid}, not ours ({self.pid_or_none()})")
        return loading == 0

    def pid_or_none(self) -> int | None:
        return self.process.pid if self.process is not None else None



def redis_ping(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()
