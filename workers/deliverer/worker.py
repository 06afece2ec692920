"""The deliverer's run loop: read alerts, deliver each (alert, channel) under the claim, commit the frontier.

One task per (alert, channel); per channel a concurrency limit, a token bucket and a circuit
breaker; a retry loop driven by ``policy.decide_retry``. Offsets are committed only up to the lowest
alert with a delivery not yet terminal (delivered, dead-lettered, muted, skipped as a duplicate, or
parked). The stop-delivery kill switch pauses the consumer (alerts wait in Kafka) and holds attempts.

Parking (when the pipeline has a retry topic): a delivery that failed ``local_attempts`` times in a
row, whose next backoff is longer than ``local_max_delay``, or whose channel's circuit is open is
written to the retry topic with its channel, attempts and not-before time, and its alert's offset
becomes committable, so a dead channel neither holds the commit frontier nor fills ``max_inflight``
(the pattern of Uber's and Kafka Connect's retry topics). The same consumer reads the retry topic;
a record not yet due waits in an in-memory delay queue (a heap), never blocking the partition
behind it; past ``max_retry_waiting`` only the retry topic pauses. The claim key per (alert,
channel) makes any replay or duplicate park harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import heapq
import itertools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import (
    OFFSET_RESET,
    ChannelSpec,
    ConfigSource,
    PipelineConfig,
    SecretKeyRef,
    consumer_group,
    parse_duration,
)
from alertpipe.workers.deliverer import metrics as m
from alertpipe.workers.deliverer.claims import ClaimResult, Claims
from alertpipe.workers.deliverer.kafka_io import AsyncProducer, PartitionTracker, client_options
from alertpipe.workers.deliverer.policy import (
    BreakerState,
    CircuitBreaker,
    RetryBudget,
    TokenBucket,
    backoff_delay,
    decide_retry,
)
from alertpipe.workers.deliverer.records import (
    REPLAY_HEADER,
    AuditEntry,
    DeadLetter,
    Decision,
    Parked,
    received_reason,
)
from alertpipe.workers.deliverer.senders import Sender, Senders, SetupError
from alertpipe.workers.deliverer.ssrf import SsrfPolicy
from alertpipe.workers.errors import DeliveryError

__all__ = ["Deliverer", "DelivererSettings", "Outcome", "is_muted", "is_paused"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DelivererSettings:
    group_id: str | None = None  # default alertpipe.<tenant>.<pipeline>.deliverer
    instance_id: str | None = None  # static group membership (e.g. the pod name): fast takeover
    max_inflight: int = 20_000  # alerts read and not terminal before the consumer pauses
    claim_ttl: float = 5.0  # a lease, extended while a send waits (claims.py)
    commit_interval: float = 0.2
    breaker_threshold: int = 5
    breaker_cooldown: float = 5.0
    shutdown_grace: float = 10.0
    batch_size: int = 500
    local_attempts: int = 3  # failed attempts in a row kept in memory before a delivery is parked
    local_max_delay: float = 1.0  # a longer backoff (or Retry-After) parks the delivery instead
    # parked deliveries read back and not yet due before the retry topic pauses
    max_retry_waiting: int = 20_000
    http_client: str = "lean"  # plain-http webhooks: "lean" (http1.py) or "aiohttp"
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


class Outcome(Enum):
    DELIVERED = "delivered"
    DEAD = "dead_lettered"
    MUTED = "muted"
    SKIPPED_DELIVERED = "skipped_delivered"
    SKIPPED_DEAD = "skipped_dead"
    PARKED = "parked"  # on the retry topic: terminal for this offset, not for the delivery


def _now_utc() -> datetime:
    return datetime.now(tz=UTC)


def is_paused(config: PipelineConfig, now: datetime) -> bool:
    ks = config.kill_switches.stop_delivery
    return ks is not None and ks.active(now)


def is_muted(config: PipelineConfig, channel: str, now: datetime) -> str | None:
    """The mute reason when ``channel`` is muted now, else None."""
    for sw in config.kill_switches.muted_channels:
        if sw.name == channel and sw.active(now):
            return sw.reason
    return None


class _Channel:
    """Runtime state of one channel: its spec, limiter, bucket and breaker."""

    def __init__(self, spec: ChannelSpec, threshold: int, cooldown: float) -> None:
        self.spec = spec
        self.sem = asyncio.Semaphore(spec.max_concurrency)
        self.bucket = TokenBucket(spec.rate_limit_per_second, now=time.monotonic())
        self.breaker = CircuitBreaker(threshold=threshold, cooldown=cooldown)
        r = spec.retry
        self.budget = RetryBudget(
            r.max_attempts,
            parse_duration(r.max_age),
            parse_duration(r.initial_backoff),
            parse_duration(r.max_backoff),
        )


@dataclass(frozen=True, slots=True)
class _Ctx:
    raw: bytes  # the alert's JSON as read (embedded as is in webhook bodies)
    replay: bool
    origin_s: float  # wall-clock seconds the age budget counts from (produce or replay time)
    produced_s: float  # produce time of the alert message (for delivery latency)
    # carried over from earlier passes when read back from the retry topic
    attempts: int = 0
    hops: int = 0
    first_ms: int = 0
    last_status: int | None = None
    last_detail: str = ""

    def fresh(self) -> _Ctx:
        """For another channel (a fallback): same alert, no attempts yet."""
        return dataclasses.replace(self, attempts=0, hops=0, first_ms=0, last_status=None, last_detail="")


@dataclass(order=True)
class _Waiting:
    """A parked delivery read back from the retry topic, waiting for its not-before time."""

    due: float
    seq: int
    alert: Alert = field(compare=False)
    channel: str = field(compare=False)
    ctx: _Ctx = field(compare=False)
    tp: tuple[str, int] = field(compare=False)
    offset: int = field(compare=False)
    tracker: PartitionTracker = field(compare=False)


class Deliverer:
    def __init__(
        self,
        source: ConfigSource,
        secret: Callable[[SecretKeyRef], str],
        settings: DelivererSettings | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.source = source
        self.settings = settings or DelivererSettings()
        self._secret_fn = secret
        self._secret_cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._config: PipelineConfig | None = None
        self._channels: dict[str, _Channel] = {}
        self._senders = Senders(
            self._secret, self._ssrf_policy, lean_http=self.settings.http_client == "lean"
        )
        self._sender: Sender = sender or self._senders
        self._trackers: dict[tuple[str, int], PartitionTracker] = {}
        self._lock = threading.Lock()
        self._chains: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight = 0  # alerts-topic deliveries not terminal
        self._inflight_retry = 0  # retry-topic deliveries running
        self._waiting: list[_Waiting] = []  # heap by due time
        self._seq = itertools.count()
        self._wake_waiting = asyncio.Event()
        self._parked_firing: dict[tuple[str, str], float] = {}  # (alert id, channel) -> due (firing)
        self._probe_released: dict[str, float] = {}  # channel -> monotonic time a held park went as probe
        self._gated: frozenset[str] = frozenset()
        self._kexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliverer-consumer")
        self._consumer: Any = None
        self._producer: AsyncProducer | None = None
        self._redis: aioredis.Redis | None = None
        self._claims: Claims | None = None
        self._rand = random.SystemRandom().random
        self._retry_topic: str | None = None
        self.ready = asyncio.Event()

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
            for name in list(self._channels):
                spec = cfg.channel(name)
                if spec is None or spec != self._channels[name].spec:
                    del self._channels[name]
            self._secret_cache.clear()
            logger.info("deliverer running config revision %s", cfg.revision)
        return cfg

    def _channel(self, name: str) -> _Channel | None:
        ch = self._channels.get(name)
        if ch is None:
            spec = self.config.channel(name)
            if spec is None:
                return None
            ch = self._channels[name] = _Channel(
                spec, self.settings.breaker_threshold, self.settings.breaker_cooldown
            )
        return ch

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
        loop = asyncio.get_running_loop()
        opts = client_options(cfg, self._secret)
        group = self.settings.group_id or consumer_group(cfg.tenant, cfg.pipeline, "deliverer")
        self._producer = AsyncProducer(opts, loop)
        self._consumer = Consumer(
            {
                **opts,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": OFFSET_RESET,
                "enable.partition.eof": False,
                "partition.assignment.strategy": "cooperative-sticky",
                **({"group.instance.id": self.settings.instance_id} if self.settings.instance_id else {}),
            }
        )
        if not cfg.redis.url and cfg.redis.url_secret_ref is None:
            raise DeliveryError("redis.url or redis.urlSecretRef must be set", retryable=False)
        url = cfg.redis.url or self._secret(cfg.redis.url_secret_ref)  # type: ignore[arg-type]
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=None)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._claims = Claims(
            self._redis,
            cfg.redis.key_prefix,
            self.settings.owner,
            claim_ttl=self.settings.claim_ttl,
            mark_ttl=parse_duration(cfg.dedup_ttl),
        )
        await self._senders.start()
        topics = [cfg.kafka.topics.alerts] + ([cfg.kafka.topics.retry] if cfg.kafka.topics.retry else [])
        self._retry_topic = cfg.kafka.topics.retry
        await loop.run_in_executor(self._kexec, self._subscribe, topics)
        logger.info(
            "deliverer consuming %s as group %s (owner %s)%s",
            ", ".join(topics),
            group,
            self.settings.owner,
            "" if self._retry_topic else "; no retry topic: retries wait in memory",
        )
        committer = asyncio.create_task(self._commit_loop(stop), name="commit")
        releaser = asyncio.create_task(self._waiting_loop(stop), name="retry-due")
        self._claims.start_renewing()  # stopped by Claims.close in _shutdown, after the last sends
        try:
            await self._consume_loop(stop)
        finally:
            releaser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await releaser
            await self._shutdown(committer)

    def _subscribe(self, topics: list[str]) -> None:
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        pending = [t for t in self._tasks if not t.done()]
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
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._kexec, self._commit_sync)
        await loop.run_in_executor(self._kexec, self._consumer.close)
        self._kexec.shutdown(wait=True)
        if self._producer is not None:
            await loop.run_in_executor(None, self._producer.close)
        await self._senders.close()
        if self._claims is not None:
            await self._claims.close()
        if self._redis is not None:
            await self._redis.aclose()
        self.source.stop()

    # --- consumer thread -------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._trackers[(tp.topic, tp.partition)] = PartitionTracker()
        logger.info("assigned %s", [p.partition for p in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        offsets = []
        with self._lock:
            for tp in partitions:
                tr = self._trackers.pop((tp.topic, tp.partition), None)
                f = tr.frontier() if tr else None
                if f is not None:
                    offsets.append(TopicPartition(tp.topic, tp.partition, f))
        if offsets:
            with contextlib.suppress(KafkaException):
                consumer.commit(offsets=offsets, asynchronous=False)
        logger.info("revoked %s", [p.partition for p in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._trackers.pop((tp.topic, tp.partition), None)
        logger.warning("partitions lost %s", [p.partition for p in partitions])

    def _poll(self, gated: frozenset[str]) -> list[Any]:
        """Read what is there, with the partitions of the ``gated`` topics paused."""
        c = self._consumer
        if gated != self._gated:
            assignment = c.assignment()
            stop = [tp for tp in assignment if tp.topic in gated]
            go = [tp for tp in assignment if tp.topic not in gated]
            if stop:
                c.pause(stop)
            if go:
                c.resume(go)
            self._gated = gated
        # consume(n, timeout) waits for a full batch or the timeout: a trickle of alerts would
        # wait up to the timeout each. Block for the first message only, then take what is there.
        head = c.poll(0.1)
        if head is None:
            return []
        msgs: list[Any] = [head, *c.consume(num_messages=self.settings.batch_size - 1, timeout=0)]
        if not gated:
            return msgs
        # Paused partitions return nothing; a partition assigned meanwhile may: put it back.
        kept = []
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error() is None and msg.topic() in gated:
                first.setdefault((msg.topic(), msg.partition()), msg.offset())
            else:
                kept.append(msg)
        for (t, p), off in first.items():
            c.seek(TopicPartition(t, p, off))
        if first:
            c.pause([TopicPartition(t, p) for t, p in first])
        return kept

    def _commit_sync(self) -> None:
        offsets = self._frontiers()
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                logger.warning("offset commit failed (will retry): %s", exc)
                return
            with self._lock:
                for tp in offsets:
                    tr = self._trackers.get((tp.topic, tp.partition))
                    if tr is not None:
                        tr.committed = max(tr.committed, tp.offset)

    def _frontiers(self) -> list[TopicPartition]:
        with self._lock:
            out = []
            for (topic, part), tr in self._trackers.items():
                f = tr.frontier()
                if f is not None:
                    out.append(TopicPartition(topic, part, f))
            return out

    # --- event loop side -------------------------------------------------------------------------

    async def _consume_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            cfg = self._refresh_config()
            paused = is_paused(cfg, _now_utc())
            _child(m.PAUSED, cfg.tenant).set(1 if paused else 0)
            retry = self._retry_topic
            gated = set()
            if paused or self._inflight >= self.settings.max_inflight:
                gated.add(cfg.kafka.topics.alerts)
            if retry and (
                paused or len(self._waiting) + self._inflight_retry >= self.settings.max_retry_waiting
            ):
                gated.add(retry)
            msgs = await loop.run_in_executor(self._kexec, self._poll, frozenset(gated))
            if not self.ready.is_set() and self._trackers:
                self.ready.set()
            for msg in msgs:
                self._dispatch(msg)
            _child(m.INFLIGHT, cfg.tenant).set(self._inflight)
            _child(m.RETRY_WAITING, cfg.tenant).set(len(self._waiting))
            if gated or not msgs:
                await asyncio.sleep(0)

    async def _waiting_loop(self, stop: asyncio.Event) -> None:
        """Start each parked delivery read back from the retry topic once its not-before time comes."""
        while not stop.is_set():
            now = time.time()
            while self._waiting and self._waiting[0].due <= now:
                w = heapq.heappop(self._waiting)
                with self._lock:
                    mine = self._trackers.get(w.tp) is w.tracker
                if not mine:  # revoked meanwhile: the new owner reads it again
                    continue
                hold = self._hold_for_circuit(w, now)
                if hold > 0:
                    w.due = now + hold
                    heapq.heappush(self._waiting, w)
                    continue
                self._spawn(self._deliver_chain(w.alert, w.channel, w.ctx), w.tp, w.offset, retry=True)
            self._wake_waiting.clear()
            wait = min(0.5, self._waiting[0].due - now) if self._waiting else 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_waiting.wait(), max(wait, 0.001))

    def _hold_for_circuit(self, w: _Waiting, now: float) -> float:
        """Seconds to keep a due parked delivery in memory because its channel's circuit is open, or 0.

        Parking it again would write it to the retry topic and read it back once per cooldown,
        for nothing; held here it costs a heap entry. One of them is let go per cooldown as the
        probe. Not past half of ``max_retry_waiting`` (the retry topic must not pause for a dead
        channel) nor past the delivery's age budget (it is dead-lettered on time).
        """
        ch = self._channels.get(w.channel)
        if ch is None or ch.breaker.state is BreakerState.CLOSED:
            return 0.0
        if len(self._waiting) >= self.settings.max_retry_waiting // 2:
            return 0.0
        b = ch.breaker
        mono = time.monotonic()
        start = b.opened_at if b.state is BreakerState.OPEN else b.probe_started
        reopen = start + b.cooldown
        released = self._probe_released.get(w.channel)
        if mono >= reopen and (released is None or mono - released >= b.cooldown):
            self._probe_released[w.channel] = mono  # this one goes: it takes the probe slot
            return 0.0
        hold = max(reopen - mono, 0.2) + self._rand() * min(b.cooldown, 1.0)
        if now - w.ctx.origin_s + hold > ch.budget.max_age:
            return 0.0
        return hold

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.commit_interval)
            if self._frontiers():
                await loop.run_in_executor(self._kexec, self._commit_sync)

    def _dispatch(self, msg: Any) -> None:
        if msg.error() is not None:
            logger.warning("consumer error: %s", msg.error().str())
            return
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        with self._lock:
            tr = self._trackers.get(tp)
            if tr is None:  # revoked while the batch was in hand: the new owner delivers it
                return
        cfg = self.config
        value = msg.value() or b""
        if tp[0] == self._retry_topic:
            self._dispatch_parked(msg, tr, value)
            return
        try:
            alert = Alert.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            reason = "not an alert: " + (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            with self._lock:
                tr.add(offset, 1)
            self._spawn(self._dead_letter_invalid(value, msg.key(), reason), tp, offset)
            return
        channels = list(dict.fromkeys(alert.channels))
        with self._lock:
            tr.add(offset, len(channels))
        now = time.time()
        ts_type, ts_ms = msg.timestamp()
        produced = ts_ms / 1000 if ts_ms and ts_ms > 0 else alert.processed_at_ms / 1000
        replay_ms = _header(msg.headers(), REPLAY_HEADER)
        replay = replay_ms is not None
        origin = int(replay_ms) / 1000 if replay_ms and replay_ms.isdigit() else produced
        if not channels:  # nothing else will say that it was read
            self._audit(
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
            _child(m.READ_DELAY, cfg.tenant).observe(max(0.0, now - produced))
        ctx = _Ctx(value, replay, origin, produced)
        # One decision-log record per delivery, not one more per alert: the tasks' records carry
        # when the alert was read (``received_ms``); `alertpipe explain` shows it as its own row.
        token = _RECEIVED.set((int(now * 1000), alert.event_time_ms, replay))
        try:
            for ch in channels:
                self._spawn(self._deliver_chain(alert, ch, ctx), tp, offset)
        finally:
            _RECEIVED.reset(token)

    def _dispatch_parked(self, msg: Any, tr: PartitionTracker, value: bytes) -> None:
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        with self._lock:
            tr.add(offset, 1)
        try:
            parked = Parked.from_headers(msg.headers())
            alert = Alert.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            reason = "not a parked delivery: " + (
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            self._spawn(self._dead_letter_invalid(value, msg.key(), reason), tp, offset, retry=True)
            return
        ctx = _Ctx(
            value,
            parked.replay,
            parked.origin_ms / 1000,
            parked.produced_ms / 1000,
            attempts=parked.attempts,
            hops=parked.hops,
            first_ms=parked.first_attempt_ms,
            last_status=parked.last_status,
            last_detail=parked.last_response,
        )
        due = parked.not_before_ms / 1000
        if due <= time.time():
            self._spawn(self._deliver_chain(alert, parked.channel, ctx), tp, offset, retry=True)
            return
        heapq.heappush(
            self._waiting, _Waiting(due, next(self._seq), alert, parked.channel, ctx, tp, offset, tr)
        )
        if self._waiting[0].offset == offset and self._waiting[0].tp == tp:
            self._wake_waiting.set()  # earlier than what the releaser sleeps for

    def _spawn(self, coro: Any, tp: tuple[str, int], offset: int, retry: bool = False) -> None:
        task = asyncio.create_task(coro)
        if retry:
            self._inflight_retry += 1
        else:
            self._inflight += 1
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if retry:
                self._inflight_retry -= 1
            else:
                self._inflight -= 1
            if t.cancelled():
                return  # not terminal: the offset stays uncommitted and is redelivered
            exc = t.exception()
            if exc is not None:
                logger.error("delivery task failed (offset %d stays uncommitted): %r", offset, exc)
                return
            with self._lock:
                tr = self._trackers.get(tp)
                if tr is not None:
                    tr.done(offset)

        task.add_done_callback(done)

    def _audit(self, entry: AuditEntry) -> None:
        if self._producer is not None and self._config is not None:
            self._producer.fire(self._config.kafka.topics.audit, entry.alert_id, entry.to_json())

    def _log(self, alert: Alert, decision: Decision, channel: str, **kw: Any) -> None:
        cfg = self.config
        got = _RECEIVED.get()
        if got is not None:
            kw["received_ms"], kw["fired_ms"], kw["replayed"] = got
        self._audit(
            AuditEntry(
                alert.id,
                decision,
                int(time.time() * 1000),
                status=alert.status,
                channel=channel,
                delivery_key=alert.delivery_key(channel),
                rule=alert.rule,
                pipeline=alert.pipeline,
                tenant=alert.tenant,
                revision=cfg.revision,
                **kw,
            )
        )

    async def _deliver_chain(self, alert: Alert, channel: str, ctx: _Ctx) -> None:
        """Deliver to ``channel`` and, if it gives up, to its fallback chain; one (id, channel) at a time."""
        chain_key = f"{alert.id}:{channel}"
        prev = self._chains.get(chain_key)
        me: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._chains[chain_key] = me
        try:
            if prev is not None and not prev.done():
                # firing and resolved of one alert reach a channel in order (a resolve never overtakes)
                await asyncio.shield(prev)
            visited = {channel}
            name = channel
            while True:
                behind = self._parked_firing.get((alert.id, name)) if alert.status != "firing" else None
                if behind is not None and behind + 60 < time.time():
                    behind = None  # that park was read back elsewhere (a rebalance): do not wait for it
                if behind is not None and self._retry_topic:
                    # its firing notification is parked: the resolve waits behind it (order per channel)
                    delay = max(behind - time.time(), 0.0) + 0.05
                    outcome = await self._park(alert, name, ctx, delay, "behind its parked firing")
                else:
                    outcome = await self._deliver_one(alert, name, ctx)
                if alert.status == "firing" and outcome is not Outcome.PARKED:
                    self._parked_firing.pop((alert.id, name), None)
                if outcome not in (Outcome.DEAD, Outcome.SKIPPED_DEAD):
                    return
                ch = self._channel(name)
                fb = ch.spec.fallback if ch else None
                if fb is None or fb in visited:
                    return
                visited.add(fb)
                self._log(alert, "fallback", name, reason=f"trying fallback channel {fb!r}")
                name = fb
                ctx = ctx.fresh()
        finally:
            me.set_result(None)
            if self._chains.get(chain_key) is me:
                del self._chains[chain_key]

    async def _deliver_one(self, alert: Alert, name: str, ctx: _Ctx) -> Outcome:
        claims = self._claims
        assert claims is not None  # noqa: S101 - set in run()
        key = alert.delivery_key(name)
        attempts = ctx.attempts
        first_ms = ctx.first_ms
        last_status: int | None = ctx.last_status
        last_detail = ctx.last_detail
        local = 0  # attempts made by this pass (the rest were made before the delivery was parked)
        while True:
            cfg = self._refresh_config()
            tenant = cfg.tenant
            while is_paused(cfg, _now_utc()):
                await asyncio.sleep(0.2)
                cfg = self._refresh_config()
            muted = is_muted(cfg, name, _now_utc())
            if muted is not None:
                await self._redis_retry(claims.release, key)
                self._log(alert, "muted", name, attempt=attempts, reason=f"channel muted: {muted}")
                _child(m.OUTCOMES, tenant, name, "muted").inc()
                return Outcome.MUTED
            ch = self._channel(name)
            if ch is None:
                return await self._give_up(
                    alert,
                    name,
                    key,
                    f"channel {name!r} is not defined in pipeline {cfg.pipeline!r}",
                    attempts,
                    None,
                    "",
                    first_ms,
                )
            age = time.time() - ctx.origin_s
            wait = ch.breaker.allow(time.monotonic())
            _child(m.CIRCUIT_STATE, tenant, name).set(ch.breaker.state.value)
            if wait > 0:
                if age + wait > ch.budget.max_age:
                    return await self._give_up(
                        alert,
                        name,
                        key,
                        f"circuit open; retry budget exhausted (alert age {age:.1f}s)",
                        attempts,
                        last_status,
                        last_detail,
                        first_ms,
                    )
                if self._retry_topic:
                    r = ch.budget
                    delay = max(
                        wait, backoff_delay(ctx.hops + 1, r.initial_backoff, r.max_backoff, self._rand)
                    )
                    delay = min(delay, max(wait, r.max_age - age + 0.05))  # back by max age, to dead-letter
                    return await self._park(
                        alert,
                        name,
                        ctx,
                        delay,
                        "circuit open",
                        attempts=attempts,
                        first_ms=first_ms,
                        last_status=last_status,
                        last_detail=last_detail,
                        release=local > 0,
                    )
                await asyncio.sleep(min(wait, 1.0))
                continue
            probe = ch.breaker.state is BreakerState.HALF_OPEN
            delay = ch.bucket.reserve(time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
            await ch.sem.acquire()
            if not probe and ch.breaker.state is not BreakerState.CLOSED:
                # the circuit opened while this one waited for a slot: back to the breaker check
                ch.sem.release()
                continue
            try:
                res = await self._redis_retry(claims.acquire, key, replay=ctx.replay)
                if res is ClaimResult.DELIVERED or res is ClaimResult.DEAD:
                    if probe:
                        ch.breaker.record_neutral()
                    outcome = (
                        Outcome.SKIPPED_DELIVERED if res is ClaimResult.DELIVERED else Outcome.SKIPPED_DEAD
                    )
                    self._log(
                        alert,
                        outcome.value,
                        name,
                        reason="already "
                        + ("delivered" if res is ClaimResult.DELIVERED else "dead-lettered"),
                    )
                    _child(m.OUTCOMES, tenant, name, outcome.value).inc()
                    return outcome
                if res is ClaimResult.BUSY:
                    if probe:
                        ch.breaker.record_neutral()
                    busy = True
                else:
                    busy = False
                    attempts += 1
                    local += 1
                    if not first_ms:
                        first_ms = int(time.time() * 1000)
                    t0 = time.perf_counter()
                    claims.hold(key)
                    try:
                        result = await self._sender.send(alert, ch.spec, key, ctx.raw)
                    except DeliveryError as exc:
                        err: DeliveryError | None = exc
                    except Exception as exc:  # a bug or an input we did not foresee: retry, then DLQ
                        logger.exception("unexpected error sending %s", key)
                        err = DeliveryError(f"unexpected {type(exc).__name__}: {exc}", retryable=True)
                    else:
                        err = None
                    took = time.perf_counter() - t0
                    if err is None:
                        # phase two inside the slot: the claim is young, and Redis load stays bounded
                        marked = await self._redis_retry(claims.mark_delivered, key)
            finally:
                claims.unhold(key)
                ch.sem.release()
            if busy:
                # Another worker holds the claim (rebalance): wait until it delivers or its claim expires.
                await asyncio.sleep(0.5)
                continue
            _child(m.SEND_LATENCY, tenant, name).observe(took)
            if err is None:
                ch.breaker.record_success()
                _child(m.CIRCUIT_STATE, tenant, name).set(0)
                if not marked:
                    logger.warning("claim on %s had expired before the delivered mark", key)
                _child(m.ATTEMPTS, tenant, name, "delivered").inc()
                _child(m.OUTCOMES, tenant, name, "delivered").inc()
                done_ms = time.time() * 1000
                _child(m.DELIVERY_LATENCY, tenant, name).observe(max(0.0, done_ms / 1000 - ctx.produced_s))
                if not ctx.replay:  # a replay's age is the operator's doing, not the pipeline's latency
                    if alert.ingest_time_ms:
                        _child(m.E2E_LATENCY, alert.pipeline, name, "ingest").observe(
                            max(0.0, (done_ms - alert.ingest_time_ms) / 1000))
                    _child(m.E2E_LATENCY, alert.pipeline, name, "event").observe(
                        max(0.0, (done_ms - alert.event_time_ms) / 1000))
                self._log(
                    alert,
                    "delivered",
                    name,
                    attempt=attempts,
                    status_code=result.status,
                    latency_ms=round(took * 1000, 2),
                )
                return Outcome.DELIVERED
            last_status, last_detail = err.status, err.reason
            if isinstance(err, SetupError) or (err.status is not None and not err.retryable):
                ch.breaker.record_neutral()
            else:
                ch.breaker.record_failure(time.monotonic())
            _child(m.CIRCUIT_STATE, tenant, name).set(ch.breaker.state.value)
            decision = decide_retry(
                attempts=attempts,
                retryable=err.retryable,
                retry_after=err.retry_after,
                age=time.time() - ctx.origin_s,
                budget=ch.budget,
                rand=self._rand,
            )
            if not decision.retry:
                _child(m.ATTEMPTS, tenant, name, "failed").inc()
                why = err.reason if not err.retryable else f"{decision.reason}; last error: {err.reason}"
                return await self._give_up(
                    alert, name, key, why, attempts, last_status, last_detail, first_ms, latency=took
                )
            _child(m.ATTEMPTS, tenant, name, "retry").inc()
            _child(m.RETRIES, tenant, name).inc()
            if self._retry_topic and (
                local >= self.settings.local_attempts
                or decision.delay > self.settings.local_max_delay
                or ch.breaker.state is BreakerState.OPEN
            ):
                return await self._park(
                    alert,
                    name,
                    ctx,
                    decision.delay,
                    f"{err.reason} ({decision.reason})",
                    attempts=attempts,
                    first_ms=first_ms,
                    last_status=last_status,
                    last_detail=last_detail,
                    release=True,
                    status_code=err.status,
                    latency=took,
                )
            self._log(
                alert,
                "retry",
                name,
                attempt=attempts,
                status_code=err.status,
                latency_ms=round(took * 1000, 2),
                reason=f"{err.reason} ({decision.reason})",
                delay_s=round(decision.delay, 3),
            )
            await asyncio.sleep(decision.delay)

    async def _park(
        self,
        alert: Alert,
        name: str,
        ctx: _Ctx,
        delay: float,
        reason: str,
        *,
        attempts: int | None = None,
        first_ms: int | None = None,
        last_status: int | None = None,
        last_detail: str | None = None,
        release: bool = False,
        status_code: int | None = None,
        latency: float | None = None,
    ) -> Outcome:
        """Write the delivery to the retry topic (acked) and let its offset go: terminal for this pass."""
        cfg = self.config
        topic = self._retry_topic
        assert topic is not None and self._claims is not None  # noqa: S101 - only called with one
        due = time.time() + delay
        parked = Parked(
            channel=name,
            attempts=ctx.attempts if attempts is None else attempts,
            hops=ctx.hops + 1,
            not_before_ms=int(due * 1000),
            origin_ms=int(ctx.origin_s * 1000),
            produced_ms=int(ctx.produced_s * 1000),
            first_attempt_ms=ctx.first_ms if first_ms is None else first_ms,
            replay=ctx.replay,
            last_status=ctx.last_status if last_status is None else last_status,
            last_response=ctx.last_detail if last_detail is None else last_detail,
        )
        await self._publish_until_acked(topic, alert.id, ctx.raw, parked.headers())
        if release:  # another worker may read the park back before our claim would expire
            await self._redis_retry(self._claims.release, alert.delivery_key(name))
        if alert.status == "firing":
            if len(self._parked_firing) > 100_000:  # read back elsewhere (rebalance): forget the stale
                cut = time.time() - 60
                self._parked_firing = {k: v for k, v in self._parked_firing.items() if v > cut}
            self._parked_firing[(alert.id, name)] = due
        _child(m.PARKED, cfg.tenant, name).inc()
        self._log(
            alert,
            "parked",
            name,
            attempt=parked.attempts,
            status_code=status_code,
            latency_ms=round(latency * 1000, 2) if latency is not None else None,
            reason=f"{reason}; next attempt after {_iso(parked.not_before_ms)}",
            delay_s=round(delay, 3),
        )
        return Outcome.PARKED

    async def _give_up(
        self,
        alert: Alert,
        name: str,
        key: str,
        reason: str,
        attempts: int,
        last_status: int | None,
        last_detail: str,
        first_ms: int,
        latency: float | None = None,
    ) -> Outcome:
        cfg = self.config
        now_ms = int(time.time() * 1000)
        dl = DeadLetter(
            alert=alert.model_dump(mode="json", by_alias=True),
            channel=name,
            delivery_key=key,
            reason=reason,
            attempts=attempts,
            last_status=last_status,
            last_response=last_detail,
            first_attempt_ms=first_ms or now_ms,
            dead_at_ms=now_ms,
            pipeline=cfg.pipeline,
            tenant=cfg.tenant,
        )
        await self._publish_until_acked(cfg.kafka.topics.dead_letter, key, dl.to_json(), dl.headers())
        assert self._claims is not None  # noqa: S101
        await self._redis_retry(self._claims.mark_dead, key)
        _child(m.DEAD_LETTERS, cfg.tenant, name).inc()
        _child(m.OUTCOMES, cfg.tenant, name, "dead_lettered").inc()
        self._log(
            alert,
            "dead_lettered",
            name,
            attempt=attempts,
            status_code=last_status,
            reason=reason,
            latency_ms=round(latency * 1000, 2) if latency is not None else None,
        )
        logger.info("dead-lettered %s after %d attempts: %s", key, attempts, reason)
        return Outcome.DEAD

    async def _dead_letter_invalid(self, value: bytes, key: bytes | None, reason: str) -> None:
        cfg = self.config
        now_ms = int(time.time() * 1000)
        dl = DeadLetter(
            alert={},
            channel="",
            delivery_key="",
            reason=reason,
            attempts=0,
            last_status=None,
            last_response="",
            first_attempt_ms=now_ms,
            dead_at_ms=now_ms,
            pipeline=cfg.pipeline,
            tenant=cfg.tenant,
            extra={"raw": value[:4096].decode("utf-8", errors="replace")},
        )
        await self._publish_until_acked(cfg.kafka.topics.dead_letter, key or b"", dl.to_json(), dl.headers())
        logger.warning("invalid message on the alerts topic dead-lettered: %s", reason)

    async def _publish_until_acked(self, topic: str, key: bytes | str, value: bytes, headers: Any) -> None:
        assert self._producer is not None  # noqa: S101
        delay = 0.2
        while True:
            try:
                await self._producer.send(topic, key, value, headers)
                return
            except KafkaException as exc:
                logger.warning("dead-letter write to %s failed, retrying in %.1fs: %s", topic, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _redis_retry(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Redis is required for the claim: while it is away the delivery waits (it stays non-terminal)."""
        delay = 0.1
        while True:
            try:
                return await fn(*args, **kw)
            except (
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                redis.exceptions.BusyLoadingError,
                redis.exceptions.TryAgainError,
            ) as exc:
                logger.warning("redis unavailable (%s), retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# (read at ms, event time ms, replayed) of the alert a delivery task was started for; tasks copy the
# context when created, so a task started from the retry topic sees None
_RECEIVED: contextvars.ContextVar[tuple[int, int, bool] | None] = contextvars.ContextVar(
    "received", default=None
)

_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: prometheus_client's lookup is costly on the hot path."""
    k = (id(metric), labels)
    c = _children.get(k)
    if c is None:
        c = _children[k] = metric.labels(*labels)
    return c


def _header(headers: list[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for k, v in headers or ():
        if k == name:
            return v.decode() if v is not None else ""
    return None
