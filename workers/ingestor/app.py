"""The ingestor's HTTP server: POST /v1/events, /healthz, /readyz, /metrics, /openapi.yaml.

aiohttp rather than Starlette on uvicorn: one dependency the project already has (the deliverer
uses its client), a mature HTTP/1.1 parser in C, and no ASGI layer between the socket and the
handler: on a 2-core machine it served more requests per second in our benchmark than an
equivalent Starlette app would with its extra per-request ASGI scope and middleware hops.

The handler stays thin: authenticate (keys.py), check the size, parse and validate (body.py,
pure), produce and await the broker's acknowledgements (producer.py), answer. The answer codes:
202 all accepted events acknowledged · 400 not JSON / no valid event · 401 missing or unknown key ·
403 a key of another tenant or pipeline · 413 body over ``ingest.maxBodyBytes`` · 429 too many
events awaiting acknowledgement (Retry-After) · 503 broker unreachable, config not loaded or
shutting down (Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alertpipe.workers.config import ConfigSource, PipelineConfig, SecretKeyRef, kafka_options
from alertpipe.workers.errors import ConfigError
from alertpipe.workers.ingestor.accept import (
    RETRY_AFTER_UNAVAILABLE,
    Answer,
    admit,
    decide,
    publish,
    too_large,
)
from alertpipe.workers.ingestor.body import BodyError, parse_body
from alertpipe.workers.ingestor.keys import KeyRing
from alertpipe.workers.ingestor.metrics import IngestorMetrics
from alertpipe.workers.ingestor.producer import EventProducer, producer_options
from alertpipe.workers.schemas import SchemaSet
from alertpipe.workers.secrets import SecretResolver
from alertpipe.workers.tracing import TRACEPARENT, TracingHolder

__all__ = ["Ingestor", "IngestorSettings", "KeySource", "decide"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class IngestorSettings:
    delivery_timeout: float = 15.0  # seconds a request waits for the broker before 503
    max_inflight: int = 200_000  # unacknowledged events before 429
    linger_ms: int = 1  # a request is a batch already; 5 cost ~4 ms of POST -> 202 (bench/e2e)
    health_interval: float = 1.0
    key_reload_interval: float = 5.0
    config_poll_interval: float = 0.5
    producer_options: dict[str, Any] = field(default_factory=dict)  # extra librdkafka options


class KeySource:
    """API keys from a file (``--api-keys-file``) or the pipeline's Secret; reloaded when changed.

    An unreadable or invalid key list is logged (by line number, never the key) and the last good
    one stays in force.
    """

    def __init__(self, *, path: str | Path | None = None, resolver: SecretResolver | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self.resolver = resolver
        self._text: str | None = None
        self._bad: str | None = None
        self.ring = KeyRing([])
        self.invalid_seen = 0  # distinct invalid key lists seen (each logged once)

    @classmethod
    def static(cls, ring: KeyRing) -> KeySource:
        src = cls()
        src.ring = ring
        return src

    def reload(self, config: PipelineConfig | None) -> bool:
        """Read the key list again; True when a new one was taken."""
        try:
            if self._path is not None:
                text, where = self._path.read_text(), str(self._path)
            elif self.resolver is not None and config is not None and config.ingest.api_keys_secret_ref:
                ref = config.ingest.api_keys_secret_ref
                text = self.resolver.resolve(ref).get_secret_value()
                where = f"secret {ref.name}/{ref.key}"
            else:
                return False
        except (OSError, ConfigError) as exc:
            logger.error("api keys cannot be read, keeping %d loaded keys: %s", len(self.ring), exc)
            return False
        if text == self._text or text == self._bad:
            return False
        try:
            ring = KeyRing.from_text(text, source=where)
        except ConfigError as exc:
            logger.error("api key list is invalid, keeping %d loaded keys: %s", len(self.ring), exc)
            self._bad = text
            self.invalid_seen += 1
            return False
        self._text = text
        self.ring = ring
        logger.info("loaded %d api keys from %s", len(ring), where)
        return True


def _json(
    status: int, obj: Any, retry_after: int | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = str(retry_after)
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json", headers=hdrs)


class Ingestor:
    """One pipeline's ingest server; ``app()`` builds the aiohttp application."""

    def __init__(
        self,
        source: ConfigSource,
        keys: KeySource,
        settings: IngestorSettings | None = None,
        *,
        metrics: IngestorMetrics | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.source = source
        self.keys = keys
        self.settings = settings or IngestorSettings()
        self.metrics = metrics or IngestorMetrics()
        self.producer: EventProducer | None = None
        self.draining = False
        self._clock_ms = clock_ms
        self._config: PipelineConfig | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._openapi: bytes | None = None
        self._producer_error: str | None = None
        self.schemas = SchemaSet(None)  # the config's spec.schema, compiled
        self.tracing = TracingHolder("ingestor", self._secret)  # spec.tracing's spans

    @property
    def config(self) -> PipelineConfig | None:
        """The loaded PipelineConfig (None until the first is read)."""
        return self._config

    def _secret(self, ref: SecretKeyRef) -> str:
        return (self.keys.resolver or SecretResolver()).resolve(ref).get_secret_value()

    def now_ms(self) -> int:
        """The ingest timestamp stamped on events (``_ingestTs``)."""
        return self._clock_ms()

    # --- lifecycle ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        # Body size is checked by the handler against the live config; aiohttp's own cap is lifted.
        app = web.Application(client_max_size=1 << 40)
        app.router.add_post("/v1/events", self.post_events)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_handler)
        app.router.add_get("/openapi.yaml", self.openapi)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self.source.start()
        self._refresh_config()
        self.keys.reload(self._config)
        self.metrics.key_count.set(len(self.keys.ring))
        if not len(self.keys.ring):
            logger.error("no api keys loaded: every request will get 401 (see --api-keys-file)")
        self._tasks = [
            asyncio.create_task(self._every(self.settings.config_poll_interval, self._refresh_config)),
            asyncio.create_task(self._every(self.settings.key_reload_interval, self._reload_keys)),
        ]

    async def _on_shutdown(self, _app: web.Application) -> None:
        self.draining = True  # readyz → 503, new requests → 503; in-flight ones finish

    async def _on_cleanup(self, _app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.source.stop()
        if self.producer is not None:
            producer, self.producer = self.producer, None
            left = await asyncio.get_running_loop().run_in_executor(
                None, producer.close, self.settings.delivery_timeout
            )
            logger.info("producer flushed (%d events left unacknowledged)", left)
        await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)

    async def _every(self, interval: float, fn: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:  # a background refresh must never stop: log it and try again
                logger.exception("background refresh failed")

    def _reload_keys(self) -> None:
        if self.keys.reload(self._config):
            self.metrics.key_count.set(len(self.keys.ring))

    def _refresh_config(self) -> None:
        cfg = self.source.current()
        if cfg is None:
            return
        if self._config is None or cfg.revision != self._config.revision:
            self._take_config(cfg)
        elif self.tracing.waiting:
            self.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
        if self.producer is not None and self.producer.fatal:
            logger.error("the Kafka producer hit a fatal error; replacing it")
            old, self.producer = self.producer, None
            threading.Thread(target=old.close, args=(1.0,), name="kafka-close", daemon=True).start()
        if self.producer is None:
            try:
                self.producer = self._make_producer(cfg)
            except ConfigError as exc:  # e.g. the Kafka credentials Secret is not mounted yet
                if str(exc) != self._producer_error:
                    logger.error("cannot start the Kafka producer (retrying): %s", exc)
                self._producer_error = str(exc)
            else:
                self._producer_error = None

    def _take_config(self, cfg: PipelineConfig) -> None:
        old, self._config = self._config, cfg
        if old is None or old.event_schema != cfg.event_schema:
            self.schemas = SchemaSet(cfg.event_schema)
        self.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
        if old is not None:
            self.metrics.config_info.remove(old.tenant, old.pipeline, old.revision)
            o, n = old.kafka, cfg.kafka
            if (o.bootstrap_servers, o.client_options, o.credentials_secret_ref) != (
                n.bootstrap_servers, n.client_options, n.credentials_secret_ref
            ):
                logger.warning("kafka connection settings changed in revision %s: restart to apply",
                               cfg.revision)
        self.metrics.config_info.labels(cfg.tenant, cfg.pipeline, cfg.revision).set(1)
        if self.producer is not None:
            self.producer.topic = cfg.kafka.topics.events
        if old is None or old.ingest.api_keys_secret_ref != cfg.ingest.api_keys_secret_ref:
            self._reload_keys()

    def _make_producer(self, cfg: PipelineConfig) -> EventProducer:
        ref = cfg.kafka.credentials_secret_ref
        resolver = self.keys.resolver or SecretResolver()
        shared = kafka_options(cfg.kafka, resolver.key_of(ref.name) if ref is not None else None)
        bootstrap = shared.pop("bootstrap.servers")
        opts = producer_options(
            bootstrap,
            {**shared, **self.settings.producer_options},
            delivery_timeout_ms=int(self.settings.delivery_timeout * 1000),
            linger_ms=self.settings.linger_ms,
        )
        gauge = self.metrics.broker_up
        return EventProducer(
            opts,
            topic=cfg.kafka.topics.events,
            max_inflight=self.settings.max_inflight,
            health_interval=self.settings.health_interval,
            on_ready_change=lambda up: gauge.set(1 if up else 0),
        )

    # --- handlers -------------------------------------------------------------------------------

    def _answer(
        self, status: int, obj: Any, retry_after: int | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.metrics.requests.labels(str(status)).inc()
        return _json(status, obj, retry_after, headers)

    def _say(self, answer: Answer) -> web.Response:
        return self._answer(answer.status, answer.body, answer.retry_after, answer.headers)

    async def post_events(self, request: web.Request) -> web.Response:
        cfg, producer = self._config, self.producer
        refused = admit(cfg, producer, self.draining, self.keys.ring, request.headers.get("Authorization"))
        if refused is not None:
            return self._say(refused)
        assert cfg is not None and producer is not None  # noqa: S101 - admit checked them
        limit = cfg.ingest.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            return self._say(too_large(length, limit))
        if not producer.ready:
            return self._answer(
                503, {"error": f"Kafka is unavailable: {producer.not_ready_reason}"}, RETRY_AFTER_UNAVAILABLE
            )
        body = await self._read_capped(request, limit)
        if body is None:
            return self._say(too_large(None, limit))
        self.metrics.body_bytes.inc(len(body))
        try:
            items, lines = parse_body(body, request.headers.get("Content-Type", ""))
        except BodyError as exc:
            return self._answer(400, {"error": str(exc)})
        tracing = self.tracing.current
        return self._say(
            await publish(items, lines, cfg, producer, self.metrics, self._clock_ms(), self.schemas,
                          tracing, request.headers.get(TRACEPARENT) if tracing.enabled else None)
        )

    @staticmethod
    async def _read_capped(request: web.Request, limit: int) -> bytes | None:
        """The body, or None as soon as it passes ``limit`` bytes (also after decompression)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "shutting down"
        if self._config is None:
            return False, "the pipeline config is not loaded yet"
        if not len(self.keys.ring):
            return False, "no api keys loaded"
        if self.producer is None or not self.producer.ready:
            reason = self.producer.not_ready_reason if self.producer else "no producer"
            return False, f"Kafka is unavailable: {reason}"
        return True, "ok"

    async def readyz(self, _request: web.Request) -> web.Response:
        ready, reason = self.readiness()
        return _json(200 if ready else 503, {"ready": ready, "reason": reason})

    async def metrics_handler(self, _request: web.Request) -> web.Response:
        if self.producer is not None:
            self.metrics.inflight.set(self.producer.inflight)
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi(self, _request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = openapi_document()
        return web.Response(body=self._openapi, content_type="application/yaml")


def openapi_document() -> bytes:
    """The OpenAPI 3.1 document of the ingestor (shipped in the package)."""
    return importlib.resources.files("alertpipe.workers.ingestor").joinpath("openapi.yaml").read_bytes()
