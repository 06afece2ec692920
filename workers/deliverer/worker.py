"""The deliverer's run loop: read alerts, deliver each (alert, channel) under the claim, commit the frontier.

One task per (alert, channel); per channel a concurrency limit, a token bucket and a circuit
breaker (channels.py); each delivery is an ``Attempt`` (attempt.py) inside a fallback chain
(chains.py). Offsets are committed only up to the lowest alert with a delivery not yet terminal
(delivered, dead-lettered, muted, skipped as a duplicate, or parked: consumer.py, outcomes.py). The
stop-delivery kill switch pauses the consumer (alerts wait in Kafka) and holds attempts.

With a retry topic, a delivery that keeps failing is parked there (parking.py, the pattern of
Uber's and Kafka Connect's retry topics) and its offset becomes committable, so a dead channel
neither holds the commit frontier nor fills ``max_inflight``; the same consumer reads the retry
topic back. Past ``max_retry_waiting`` parks read back and not yet due, only the retry topic
pauses. The claim key per (alert, channel) makes any replay or duplicate park harmless.

This module wires the parts together (``run``) and turns each message read into deliveries
(``_dispatch``); Kafka and Redis come from ``backends.Backends``, so tests can pass in-memory ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import (
    ConfigSource,
    PipelineConfig,
    SecretKeyRef,
    consumer_group,
)
from alertpipe.workers.deliverer import metrics as m
from alertpipe.workers.deliverer.attempt import Seams
from alertpipe.workers.deliverer.backends import Backends, KafkaRedis, Publisher
from alertpipe.workers.deliverer.chains import Chains
from alertpipe.workers.deliverer.channels import ChannelTable, is_paused
from alertpipe.workers.deliverer.consumer import AlertConsumer, is_fatal
from alertpipe.workers.deliverer.context import RECEIVED, DeliveryContext
from alertpipe.workers.deliverer.kafka_io import (
    PartitionTracker,
    client_options,
    consumer_options,
    header_value,
)
from alertpipe.workers.deliverer.metrics import child
from alertpipe.workers.deliverer.outcomes import Outcomes
from alertpipe.workers.deliverer.parking import Parking, Waiting
from alertpipe.workers.deliverer.records import REPLAY_HEADER, AuditEntry, Parked, received_reason
from alertpipe.workers.deliverer.senders import Sender, Senders
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.ssrf import SsrfPolicy
from alertpipe.workers.deliverer.tasks import DeliveryTasks
from alertpipe.workers.errors import DeliveryError
from alertpipe.workers.tracing import TracingHolder, traceparent_of

__all__ = ["Deliverer"]

logger = logging.getLogger(__name__)


class _Running:
    """The parts a run wires up once the first config is there (see ``Deliverer.run``)."""

    def __init__(self, consumer: AlertConsumer, publisher: Publisher, seams: Seams) -> None:
        self.consumer = consumer
        self.publisher = publisher
        self.seams = seams
        self.outcomes = seams.outcomes
        self.parking = seams.parking
        self.chains = Chains(seams)


class Deliverer:
    def __init__(
        self,
        source: ConfigSource,
        secret: Callable[[SecretKeyRef], str],
        settings: DelivererSettings | None = None,
        sender: Sender | None = None,
        backends: Backends | None = None,
    ) -> None:
        self.source = source
        self.settings = settings or DelivererSettings()
        self._secret_fn = secret
        self._secret_cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._config: PipelineConfig | None = None
        self._channels = ChannelTable(self.settings.breaker_threshold, self.settings.breaker_cooldown)
        self._senders = Senders(
            self._secret, self._ssrf_policy, lean_http=self.settings.http_client == "lean"
        )
        self._sender: Sender = sender or self._senders
        self._backends: Backends = backends or KafkaRedis()
        self._deliveries = DeliveryTasks(lambda: self.config.tenant)
        self._rand = random.SystemRandom().random
        self._run: _Running | None = None
        self.ready = asyncio.Event()
        self.fatal: Any = None  # a fatal consumer error: run() ends, raising a retryable DeliveryError
        self.tracing = TracingHolder("deliverer", self._secret)  # spec.tracing: a span per delivery

    # --- config and secrets --------------------------------------------------------------------

    @property
    def config(self) -> PipelineConfig:
        assert self._config is not None  # noqa: S101 - set before any delivery starts
        return self._config

    def _ssrf_policy(self) -> SsrfPolicy:
        d = self._config.delivery if self._config is not None else None
        return SsrfPolicy.of(d.allow_private_networks, tuple(d.allowed_networks)) if d else SsrfPolicy()

    def _secret(self, ref: SecretKeyRef) -> str:
        k = (ref.name, ref.key)
        hit = self._secret_cache.get(k)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        value = self._secret_fn(ref)
        self._secret_cache[k] = (value, now + 10.0)
        return value

    def _refresh_config(self) -> PipelineConfig:
        cfg = self.source.current()
        if cfg is None:
            return self.config
        if self._config is None or cfg.revision != self._config.revision or cfg is not self._config:
            if self._config is not None and cfg.revision == self._config.revision:
                self._config = cfg
                return cfg
            old = self._config
            self._config = cfg
            if old is not None:
                m.CONFIG_REVISION.remove(old.tenant, old.pipeline, old.revision)
            m.CONFIG_REVISION.labels(cfg.tenant, cfg.pipeline, cfg.revision).set(1)
            self._channels.forget_changed(cfg)
            self._secret_cache.clear()
            self.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
            logger.info("deliverer running config revision %s", cfg.revision)
        return cfg

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.source.start()
        while self.source.current() is None:
            logger.info("waiting for the first PipelineConfig")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
        cfg = self._refresh_config()
        run = self._run = self._wire(cfg)
        await self._senders.start()
        topics = [cfg.kafka.topics.alerts] + ([cfg.kafka.topics.retry] if cfg.kafka.topics.retry else [])
        await run.consumer.subscribe(topics)
        logger.info(
            "deliverer consuming %s as group %s (owner %s)%s",
            ", ".join(topics),
            self._group(cfg),
            self.settings.owner,
            "" if run.parking.topic else "; no retry topic: retries wait in memory",
        )
        committer = asyncio.create_task(
            run.consumer.commit_loop(
                stop,
                self.settings.commit_interval,
                lag=(cfg.kafka.topics.alerts, child(m.CONSUMER_LAG, cfg.tenant).set),
            ),
            name="commit",
        )
        releaser = asyncio.create_task(
            run.parking.release_loop(stop, self._start_waiting, run.consumer.owns), name="retry-due"
        )
        run.seams.claims.start_renewing()  # stopped by its close in _shutdown, after the last sends
        try:
            await self._consume_loop(stop, run)
        finally:
            releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await releaser
            await self._shutdown(run, committer)
        if self.fatal is not None:
            raise DeliveryError(f"Kafka consumer failed for good: {self.fatal.str()}", retryable=True)

    def _group(self, cfg: PipelineConfig) -> str:
        return self.settings.group_id or consumer_group(cfg.tenant, cfg.pipeline, "deliverer")

    def _wire(self, cfg: PipelineConfig) -> _Running:
        """Kafka clients, claims and the delivery parts for the pipeline ``cfg`` names."""
        s = self.settings
        opts = client_options(cfg, self._secret)
        publisher = self._backends.producer(opts, asyncio.get_running_loop())
        kafka = self._backends.consumer(consumer_options(opts, self._group(cfg), s.instance_id))
        claims = self._backends.claims(cfg, self._secret, s.owner, s.claim_ttl)
        outcomes = Outcomes(lambda: self.config, publisher, claims)
        parking = Parking(
            cfg.kafka.topics.retry,
            config=lambda: self.config,
            channels=self._channels,
            claims=claims,
            outcomes=outcomes,
            max_waiting=s.max_retry_waiting,
            rand=self._rand,
        )
        seams = Seams(
            settings=s,
            config=lambda: self.config,
            refresh=self._refresh_config,
            channels=self._channels,
            claims=claims,
            sender=self._sender,
            outcomes=outcomes,
            parking=parking,
            rand=self._rand,
            tracing=self.tracing,
        )
        return _Running(AlertConsumer(kafka, s.batch_size), publisher, seams)

    async def _shutdown(self, run: _Running, committer: asyncio.Task[None]) -> None:
        pending = self._deliveries.pending()
        if pending:
            logger.info(
                "waiting up to %.0fs for %d deliveries in flight", self.settings.shutdown_grace, len(pending)
            )
            _, still = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await run.consumer.close()
        await asyncio.get_running_loop().run_in_executor(None, run.publisher.close)
        await self._senders.close()
        await run.seams.claims.close()
        await self._backends.close()
        self.source.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)

    # --- reading -------------------------------------------------------------------------------

    async def _consume_loop(self, stop: asyncio.Event, run: _Running) -> None:
        while not stop.is_set() and self.fatal is None:
            cfg = self._refresh_config()
            if self.tracing.waiting:  # its headers Secret could not be read yet
                self.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
            paused = is_paused(cfg, datetime.now(tz=UTC))
            child(m.PAUSED, cfg.tenant).set(1 if paused else 0)
            retry = run.parking.topic
            gated = set()
            if paused or self._deliveries.inflight >= self.settings.max_inflight:
                gated.add(cfg.kafka.topics.alerts)
            if retry and (
                paused
                or len(run.parking) + self._deliveries.inflight_retry >= self.settings.max_retry_waiting
            ):
                gated.add(retry)
            msgs = await run.consumer.poll(frozenset(gated))
            if not self.ready.is_set() and run.consumer.assigned:
                self.ready.set()
            for msg in msgs:
                self._dispatch(run, msg)
            child(m.INFLIGHT, cfg.tenant).set(self._deliveries.inflight)
            child(m.RETRY_WAITING, cfg.tenant).set(len(run.parking))
            if gated or not msgs:
                await asyncio.sleep(0)

    def _dispatch(self, run: _Running, msg: Any) -> None:
        if msg.error() is not None:
            if is_fatal(msg.error()):
                self.fatal = msg.error()
            logger.warning("consumer error: %s", msg.error().str())
            return
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        tr = run.consumer.tracker(tp)
        if tr is None:  # revoked while the batch was in hand: the new owner delivers it
            return
        cfg = self.config
        value = msg.value() or b""
        if tp[0] == run.parking.topic:
            self._dispatch_parked(run, msg, tr, value)
            return
        try:
            alert = Alert.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            reason = "not an alert: " + (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            run.consumer.add(tr, offset, 1)
            self._spawn(run, partial(run.outcomes.dead_letter_invalid, value, msg.key(), reason), tp, offset)
            return
        channels = list(dict.fromkeys(alert.channels))
        run.consumer.add(tr, offset, len(channels))
        now = time.time()
        ts_type, ts_ms = msg.timestamp()
        produced = ts_ms / 1000 if ts_ms and ts_ms > 0 else alert.processed_at_ms / 1000
        headers = msg.headers()
        replay_ms = header_value(headers, REPLAY_HEADER)
        replay = replay_ms is not None
        origin = int(replay_ms) / 1000 if replay_ms and replay_ms.isdigit() else produced
        if not channels:  # nothing else will say that it was read
            run.outcomes.audit(
                AuditEntry(
                    alert.id,
                    "received",
                    int(now * 1000),
                    status=alert.status,
                    reason=received_reason(alert.event_time_ms, replay) + "; the alert names no channel",
                    rule=alert.rule,
                    pipeline=alert.pipeline,
                    tenant=alert.tenant,
                    revision=cfg.revision,
                )
            )
            return
        if not replay:
            child(m.READ_DELAY, cfg.tenant).observe(max(0.0, now - produced))
        trace = traceparent_of(headers) if self.tracing.current.enabled else None
        ctx = DeliveryContext(value, replay, origin, produced, trace=trace)
        # One decision-log record per delivery, not one more per alert: the tasks' records carry
        # when the alert was read (``received_ms``); `alertpipe explain` shows it as its own row.
        token = RECEIVED.set((int(now * 1000), alert.event_time_ms, replay))
        try:
            for ch in channels:
                self._spawn(run, partial(run.chains.deliver, alert, ch, ctx), tp, offset)
        finally:
            RECEIVED.reset(token)

    def _dispatch_parked(self, run: _Running, msg: Any, tr: PartitionTracker, value: bytes) -> None:
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        run.consumer.add(tr, offset, 1)
        try:
            parked = Parked.from_headers(msg.headers())
            alert = Alert.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            reason = "not a parked delivery: " + (
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            invalid = partial(run.outcomes.dead_letter_invalid, value, msg.key(), reason)
            self._spawn(run, invalid, tp, offset, retry=True)
            return
        ctx = DeliveryContext(
            value,
            parked.replay,
            parked.origin_ms / 1000,
            parked.produced_ms / 1000,
            attempts=parked.attempts,
            hops=parked.hops,
            first_ms=parked.first_attempt_ms,
            last_status=parked.last_status,
            last_detail=parked.last_response,
            trace=parked.trace,
        )
        due = parked.not_before_ms / 1000
        if due <= time.time():
            deliver = partial(run.chains.deliver, alert, parked.channel, ctx)
            self._spawn(run, deliver, tp, offset, retry=True)
            return
        run.parking.wait_until_due(run.parking.waiting(due, alert, parked.channel, ctx, tp, offset, tr))

    def _start_waiting(self, w: Waiting) -> None:
        assert self._run is not None  # noqa: S101 - the releaser runs inside run()
        self._spawn(
            self._run,
            partial(self._run.chains.deliver, w.alert, w.channel, w.ctx),
            w.tp,
            w.offset,
            retry=True,
        )

    # --- tasks and the offsets they acknowledge ------------------------------------------------

    def _spawn(
        self,
        run: _Running,
        make: Callable[[], Awaitable[Any]],
        tp: tuple[str, int],
        offset: int,
        retry: bool = False,
    ) -> None:
        """Run one delivery (tasks.py); when it ends with an outcome, its offset may be committed."""
        self._deliveries.spawn(make, offset, lambda: run.consumer.done(tp, offset), retry)
