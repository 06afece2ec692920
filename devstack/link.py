"""A TCP link on loopback that the chaos suite can cut: the network between clients and one broker.

``Link(target_port)`` listens on a port of its own and forwards every connection to the target.
``cut()`` stops the link as a partition does: bytes already sent wait, nothing moves either way, new
connections are accepted but get no answer, and nobody is told (no reset, no close). ``heal()``
lets the held bytes through in order, as TCP retransmission would once the network is back. Only
the clients' path is cut: a broker reaches the others on its own listener, so the controller
still sees it alive and it keeps its leaderships (a partial partition, not a broker loss).

Written by hand: the proxies that can cut a link (toxiproxy and the like) are servers to build and
drive over their own API; this is the one behaviour the suite needs, in ~100 lines.
"""

from __future__ import annotations

import logging
import socket
import threading

from devstack.processes import free_port

__all__ = ["Link"]

logger = logging.getLogger(__name__)

CHUNK = 65536


class Link:
    def __init__(self, target_port: int, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.target_port = target_port
        self.port = port or free_port()
        self._up = threading.Event()
        self._up.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._server: socket.socket | None = None

    @property
    def is_cut(self) -> bool:
        return not self._up.is_set()

    def start(self) -> None:
        if self._server is not None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        self._server = s
        self._stopped.clear()
        threading.Thread(target=self._accept, name=f"link-{self.port}", daemon=True).start()

    def cut(self) -> None:
        self._up.clear()
        logger.info("link %s -> %s cut", self.port, self.target_port)

    def heal(self) -> None:
        self._up.set()
        logger.info("link %s -> %s healed", self.port, self.target_port)

    def stop(self) -> None:
        self._stopped.set()
        self._up.set()  # the pumps wake and see the stop
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            for s in list(self._sockets):
                _close(s)
            self._sockets.clear()

    def _accept(self) -> None:
        server = self._server
        while server is not None and not self._stopped.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._track(client)
        self._up.wait()  # a connection made during a cut waits, unanswered
        if self._stopped.is_set():
            return _close(client)
        try:
            upstream = socket.create_connection((self.host, self.target_port), timeout=5)
        except OSError:
            return self._drop(client)  # the broker is down: as it would be without the link
        upstream.settimeout(None)
        self._track(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._up.wait()
                data = src.recv(CHUNK)
                if not data or self._stopped.is_set():
                    break
                self._up.wait()  # what was read before a cut is held until the heal
                dst.sendall(data)
        except OSError:
            pass
        self._drop(src)
        self._drop(dst)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
