"""A worker's metrics-and-probes HTTP server: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

prometheus_client's ``start_http_server`` answers every path with the metrics, so a probe there passes
for any path and can never say "not ready". This wraps its WSGI app with the two probe paths and
serves it the way prometheus_client does (a threading wsgiref server in a daemon thread); the
evaluator and the deliverer use it on ``--metrics-port`` (the ingestor serves its own on its HTTP port).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from alertpipe.workers.config.models import PipelineConfig
from alertpipe.workers.errors import AlertpipeError
from alertpipe.workers.secrets import SecretResolver

__all__ = ["Readiness", "RedisReadiness", "health_app", "redis_url", "start_health_server"]

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason): reason says what is missing when not ready."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _always_ready() -> tuple[bool, str]:
    return True, "ok"


def redis_url(cfg: PipelineConfig | None, secrets: SecretResolver) -> str | None:
    """The Redis URL of ``cfg`` (read from its Secret when it names one); None without a config."""
    if cfg is None:
        return None
    if cfg.redis.url is not None:
        return cfg.redis.url
    if cfg.redis.url_secret_ref is None:
        return None
    return secrets.resolve(cfg.redis.url_secret_ref).get_secret_value()


class RedisReadiness:
    """The Redis part of ``/readyz``: a worker that cannot reach its Redis cannot dedup, checkpoint or
    claim deliveries, so it is not ready, and says where it tried (host:port: the URL may hold a
    password). ``url()`` gives the current config's URL (None: no config yet); one PING per ``every``
    seconds at most, whatever the probe rate."""

    def __init__(self, url: Callable[[], str | None], every: float = 2.0, timeout: float = 1.0) -> None:
        self._url = url
        self._every = every
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: tuple[str, redis.Redis] | None = None
        self._answer: tuple[float, bool, str] = (float("-inf"), False, "")

    def _ping(self) -> tuple[bool, str]:
        try:
            url = self._url()
        except AlertpipeError as exc:
            return False, f"Redis URL: {exc}"
        if url is None:
            return False, "no pipeline config (or no Redis URL in it) loaded yet"
        if self._client is None or self._client[0] != url:
            if self._client is not None:
                self._client[1].close()
            opts = {"socket_connect_timeout": self._timeout, "socket_timeout": self._timeout}
            self._client = (url, redis.Redis.from_url(url, **opts))
        parts = urlsplit(url)
        try:
            self._client[1].ping()
        except (redis.RedisError, OSError) as exc:
            return False, f"Redis at {parts.hostname}:{parts.port or 6379} unreachable: {exc}"
        return True, "ok"

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            at, ok, reason = self._answer
            if time.monotonic() - at >= self._every:
                ok, reason = self._ping()
                self._answer = (time.monotonic(), ok, reason)
            return ok, reason

    def export(self, stage: str, registry: CollectorRegistry = REGISTRY) -> None:
        """``alertpipe_<stage>_redis_up`` in ``registry``: 1 while Redis answers, 0 while the stage
        holds its input for want of it; read at each scrape (the same cached PING as /readyz)."""
        registry.register(_RedisUp(self, stage))


class _RedisUp(Collector):
    def __init__(self, ready: RedisReadiness, stage: str) -> None:
        self._ready, self._stage = ready, stage

    def collect(self) -> Iterable[GaugeMetricFamily]:
        ok, _ = self._ready()
        yield GaugeMetricFamily(f"alertpipe_{self._stage}_redis_up",
                                "1 while Redis answers PING; 0: the stage holds its input (nothing dropped)",
                                value=1.0 if ok else 0.0)


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
