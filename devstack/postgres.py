"""A PostgreSQL server on loopback for the notification history (Debian's postgresql package).

Postgres refuses to run as root, so as root the server runs as the package's ``postgres`` user
(``setpriv --reuid``), with its data directory in a private temporary directory that user owns: the
project checkout may sit under a home directory that user cannot enter. The server log goes to the run
directory like every component's. ``fsync=off`` (a test database, thrown away at the end of the run)
still survives a SIGKILL of the server (the OS has the writes); ``synchronous_commit`` stays on, or a
commit the sink acted on could be lost in a crash.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from devstack.processes import ManagedProcess, OnePortServer, StartError, free_port, port_open

__all__ = ["PostgresServer", "postgres_bin_dir"]

USER = "postgres"
DATABASE = "alertpipe"


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin directory (initdb, postgres), or None when none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer(OnePortServer):
    START_TIMEOUT = 60.0

    def __init__(self, run_dir: Path, *, port: int | None = None, tie_to_parent: bool = True) -> None:
        self.dir = run_dir
        self.port = port or free_port()
        self._may_repick = port is None
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None
        self._data: Path | None = None
        self._create_db = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._user()}@127.0.0.1:{self.port}/{DATABASE}"

    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _user(self) -> str:
        return USER if self._as_root() else pwd.getpwuid(os.geteuid()).pw_name

    def _as_user(self, argv: list[str]) -> list[str]:
        if not self._as_root():
            return argv
        # the death signal is set after the uid change: changing credentials clears it
        tie = ["setpriv", "--pdeathsig", "KILL", "--"] if self.tie_to_parent else []
        return ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--", *tie, *argv]

    def _init(self, bins: Path) -> Path:
        data = Path(tempfile.mkdtemp(prefix="alertpipe-pg-")) / "data"
        data.parent.chmod(0o700)
        if self._as_root():
            pw = pwd.getpwnam(USER)
            os.chown(data.parent, pw.pw_uid, pw.pw_gid)
        (self.dir).mkdir(parents=True, exist_ok=True)
        (self.dir / "data-dir").write_text(str(data))  # where it is, for a look after a failure
        argv = [str(bins / "initdb"), "-D", str(data), "-U", self._user(), "--auth=trust", "-E", "UTF8",
                "--no-sync"]  # fmt: skip
        proc = subprocess.run(self._as_user(argv), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StartError(f"postgres: initdb failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
        return data

    def argv(self, bins: Path, data: Path) -> list[str]:
        return [
            str(bins / "postgres"),
            "-D", str(data),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={data.parent}",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=50",
            "-c", "shared_buffers=32MB",
        ]  # fmt: skip

    def _start_once(self, timeout: float) -> None:
        bins = postgres_bin_dir()
        if bins is None:
            raise StartError("postgres: no server installed; run `alertpipe devstack provision`")
        if self._data is None:
            self._data = self._init(bins)
            self._create_db = True
        self.process = ManagedProcess(
            "postgres",
            self._as_user(self.argv(bins, self._data)),
            self.dir / "postgres.log",
            # forked by the devstack's spawner thread (a death signal follows the forking thread); as
            # root, _as_user sets the signal again after the uid change, which clears it
            tie_to_parent=self.tie_to_parent,
            stop_timeout=15,
        )
        self.process.start()
        self.process.wait_healthy(lambda: port_open(self.port), f"listening on port {self.port}", timeout)
        self.process.wait_healthy(self._ready, "accepting connections", timeout)
        if self._create_db:
            self._sql(bins, "postgres", f"CREATE DATABASE {DATABASE}")
            self._create_db = False

    def _sql(self, bins: Path, database: str, sql: str) -> None:
        psql = shutil.which("psql") or str(bins / "psql")
        proc = subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self._user(), "-d", database,
             "-v", "ON_ERROR_STOP=1", "-qc", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StartError(f"postgres: {sql!r} failed: {proc.stderr.strip()[-500:]}")

    def _ready(self) -> bool:
        bins = postgres_bin_dir()
        isready = shutil.which("pg_isready") or (str(bins / "pg_isready") if bins else "pg_isready")
        proc = subprocess.run(
            [isready, "-h", "127.0.0.1", "-p", str(self.port), "-U", self._user(), "-d", "postgres", "-q"],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def remove_data(self) -> None:
        """Delete the data directory (after stop)."""
        if self._data is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._data.parent)
            self._data = None
