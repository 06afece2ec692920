"""The worker probe endpoints (alertpipe.workers.health): /healthz, /readyz, the rest metrics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from alertpipe.workers.health import RedisReadiness, health_app

pytestmark = pytest.mark.unit


def call(app: Any, path: str) -> tuple[str, bytes]:
    seen: list[str] = []

    def start_response(status: str, _headers: list[tuple[str, str]]) -> None:
        seen.append(status)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}, start_response))
    return seen[0], body


def test_probes_and_metrics() -> None:
    registry = CollectorRegistry()
    Counter("alertpipe_test_things", "things", registry=registry).inc()
    state = {"ready": False}
    app = health_app(registry, lambda: (True, "ok") if state["ready"] else (False, "no config yet"))

    assert call(app, "/healthz") == ("200 OK", b"ok\n")
    assert call(app, "/readyz") == ("503 Service Unavailable", b"no config yet\n")
    state["ready"] = True
    assert call(app, "/readyz") == ("200 OK", b"ok\n")
    status, body = call(app, "/metrics")
    assert status == "200 OK"
    assert b"alertpipe_test_things_total 1.0" in body
    assert b"alertpipe_test_things" not in call(app, "/healthz")[1]


def test_redis_up_gauge_follows_the_readiness_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    ready = RedisReadiness(lambda: None, every=0.0)  # no config: no URL, so no PING at all
    ready.export("evaluator", registry)
    app = health_app(registry, ready)
    assert call(app, "/readyz")[0] == "503 Service Unavailable"
    assert b"alertpipe_evaluator_redis_up 0.0" in call(app, "/metrics")[1]
    monkeypatch.setattr(ready, "_ping", lambda: (True, "ok"))
    assert b"alertpipe_evaluator_redis_up 1.0" in call(app, "/metrics")[1]
    assert call(app, "/readyz") == ("200 OK", b"ok\n")
