"""A worker's metrics-and-probes HTTP server: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

prometheus_client's ``start_http_server`` answers every path with the metrics, so a probe there passes
for any path and can never say "not ready". This wraps its WSGI app with the two probe paths and
serves it the way prometheus_client does (a threading wsgiref server in a daemon thread); the
evaluator and the deliverer use it on ``--metrics-port`` (the ingestor serves its own on its HTTP port).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

__all__ = ["Readiness", "health_app", "start_health_server"]

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason): reason says what is missing when not ready."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _always_ready() -> tuple[bool, str]:
    return True, "ok"


def health_app(registry: CollectorRegistry = REGISTRY, ready: Readiness = _always_ready) -> WsgiApp:
    """``/healthz`` 200 while the process serves; ``/readyz`` 200 or 503 from ``ready``; the rest metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ok, reason = (True, "ok") if path == "/healthz" else ready()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"{reason}\n".encode()]

    return app


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def start_health_server(
    port: int, addr: str = "0.0.0.0",  # noqa: S104 - probed and scraped from outside the pod
    registry: CollectorRegistry = REGISTRY,
    ready: Readiness = _always_ready,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve :func:`health_app` on ``addr:port`` in a daemon thread; returns the server and thread."""
    server_class = _ThreadingServer6 if ":" in addr else _ThreadingServer
    server = make_server(addr, port, health_app(registry, ready), server_class, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="health-metrics", daemon=True)
    thread.start()
    return server, thread
