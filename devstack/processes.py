"""Child processes of the devstack: start on loopback, log to a run directory, wait for health, stop.

Every component runs in its own process group (so a terminal's Ctrl-C reaches only us, and we stop
the children in order). No orphans: an atexit hook and SIGTERM/SIGHUP handlers stop every live
child, and children started with ``tie_to_parent`` also carry a parent-death signal (``setpriv
--pdeathsig KILL``), so even a SIGKILLed test session leaves nothing behind. The death signal fires
when the *thread* that forked the child ends, so all such children are forked by one long-lived
spawner thread.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TypeVar

__all__ = [
    "ManagedProcess",
    "OnePortServer",
    "StartError",
    "free_port",
    "install_signal_handlers",
    "port_open",
    "stop_all",
    "wait_until",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class StartError(RuntimeError):
    """A component did not come up; the message names it, says why, and ends with its log tail.
    ``log_path`` is the component's whole log when it exited (the tail may miss the cause)."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path

    def mentions(self, text: str) -> bool:
        """``text`` (case-insensitive) is in the message or anywhere in the component's log."""
        needle = text.lower()
        if needle in str(self).lower():
            return True
        try:
            return self.log_path is not None and needle in self.log_path.read_text(errors="replace").lower()
        except OSError:
            return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class _Spawner:
    """One daemon thread that forks every tied child, so their parent-death signal means process death."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], concurrent.futures.Future[object]]] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._loop, name="devstack-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the caller, which re-raises it
                fut.set_exception(e)

    def call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        fut: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut.result()  # type: ignore[return-value]


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()
_live: list[ManagedProcess] = []
_live_lock = threading.Lock()


def _get_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
        return _spawner


class ManagedProcess:
    """One child process: its argv, log file, and the means to start, check and stop it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        tie_to_parent: bool = True,
        stop_timeout: float = 20.0,
        inherit_env: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.tie_to_parent = tie_to_parent
        self.stop_timeout = stop_timeout
        self.inherit_env = inherit_env
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:  # restarting after the process exited by itself
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n==== devstack: starting {self.name} at {time.strftime('%H:%M:%S')}\n".encode())
        self._log.flush()
        argv = self.argv
        if self.tie_to_parent and shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        env = self.env
        if self.inherit_env and self.env is not None:
            env = {**os.environ, **self.env}
        log = self._log

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
            )

        try:
            self._popen = _get_spawner().call(spawn) if self.tie_to_parent else spawn()
        except OSError as e:
            raise StartError(f"{self.name}: cannot run {self.argv[0]}: {e.strerror}") from None
        with _live_lock:
            if self not in _live:
                _live.append(self)
        logger.debug("started %s pid %s", self.name, self._popen.pid)

    def signal(self, sig: int) -> None:
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, sig)

    def stop(self, timeout: float | None = None, *, kill: bool = False) -> None:
        """SIGTERM the process group, wait, then SIGKILL; ``kill=True`` crashes it at once."""
        popen = self._popen
        t0 = time.monotonic()
        if popen is not None:
            if popen.poll() is None:
                self.signal(signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    popen.wait(timeout=self.stop_timeout if timeout is None else timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop in time; killing it", self.name)
                    self.signal(signal.SIGKILL)
                    popen.wait(timeout=10)
            # the group may hold grandchildren still: make sure none outlives us
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            logger.info(
                "%s stopped in %.1fs (exit code %s)", self.name, time.monotonic() - t0, popen.returncode
            )
        if self._log is not None:
            self._log.close()
            self._log = None
        with _live_lock:
            if self in _live:
                _live.remove(self)

    # -- diagnostics -------------------------------------------------------------------------
    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """Wait until ``check()`` is true; fail fast if the process exits, with its log tail."""
        wait_until(check, f"{self.name}: {what}", timeout, process=self)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"


class OnePortServer:
    """A server on one loopback port, ours (picked free) or given: ``start`` (again on fresh ports when
    another process took the one we picked before our server bound it), ``stop``, ``restart`` (same
    port and data), ``running``. A subclass sets ``port``, ``process`` and ``_may_repick`` and has
    ``_start_once(timeout)``."""

    START_TIMEOUT = 30.0
    port: int
    process: ManagedProcess | None
    _may_repick: bool

    def _start_once(self, timeout: float) -> None:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> None:
        if self.process is not None and self.process.running():
            return
        wait = self.START_TIMEOUT if timeout is None else timeout
        start_with_fresh_ports(lambda: self._start_once(wait), self.stop, self._repick, self._may_repick)
        self._may_repick = False

    def _repick(self) -> None:
        self.port = free_port()

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            self.process.stop(kill=kill)

    def restart(self, *, crash: bool = False, timeout: float | None = None) -> None:
        """Stop (SIGTERM; ``crash=True``: SIGKILL), start on the same port and data."""
        self.stop(kill=crash)
        self.start(timeout=timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.running()


def start_with_fresh_ports(
    start_once: Callable[[], None], stop: Callable[[], None], repick: Callable[[], None], may_repick: bool
) -> None:
    """Run ``start_once``; when a port we picked ourselves was taken by another process before our
    server bound it ("address already in use"), stop, pick fresh ports and try again (3 tries)."""
    for attempt in range(3):
        try:
            start_once()
            return
        except StartError as e:
            if not (may_repick and attempt < 2 and e.mentions("address already in use")):
                raise
            stop()
            repick()


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    *,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        if process is not None and not process.running():
            raise StartError(
                f"{what}: process exited with code {process.exit_code()} "
                f"(log {process.log_path}); last lines:\n{process.log_tail()}",
                log_path=Path(process.log_path),
            )
        try:
            if check():
                return
        except Exception as e:  # health probes fail in many ways while a server comes up
            last_error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        if time.monotonic() >= deadline:
            tail = f"; last lines of {process.log_path}:\n{process.log_tail()}" if process else ""
            detail = f" (last probe error: {last_error})" if last_error else ""
            raise StartError(f"{what}: not ready after {timeout:.0f}s{detail}{tail}")
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)


def stop_all() -> None:
    """Stop every live child, newest first (dependents before what they depend on)."""
    with _live_lock:
        procs = list(reversed(_live))
    for p in procs:
        p.signal(signal.SIGTERM)
    for p in procs:
        try:
            p.stop(timeout=15)
        except Exception:  # keep stopping the others
            logger.exception("stopping %s", p.name)


atexit.register(stop_all)
_handlers_installed = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """On SIGTERM/SIGHUP stop the children first, then die of the signal as usual (main thread only)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)
    _handlers_installed = True
