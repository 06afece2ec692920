"""How a delivery ends, written down: the decision log (audit topic), the dead-letter topic, the
claim's verdict in Redis, and the outcome metrics. ``Outcome`` is what a delivery's attempt returns;
the offset is acknowledged (made committable) by the caller once the outcome is terminal.

Writes that must not be lost (dead letters, parks) are retried until acked; Redis calls wait while
Redis is away or refuses them (``until_redis``): the delivery stays non-terminal, so its offset
stays uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

import redis.exceptions
from confluent_kafka import KafkaException

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.deliverer import metrics as m
from alertpipe.workers.deliverer import privacy
from alertpipe.workers.deliverer.backends import ClaimStore, Publisher
from alertpipe.workers.deliverer.claims import ClaimResult
from alertpipe.workers.deliverer.context import RECEIVED, DeliveryContext
from alertpipe.workers.deliverer.metrics import child
from alertpipe.workers.deliverer.records import AuditEntry, DeadLetter, Decision

__all__ = ["Outcome", "Outcomes", "until_redis"]

logger = logging.getLogger(__name__)


class Outcome(Enum):
    DELIVERED = "delivered"
    DEAD = "dead_lettered"
    MUTED = "muted"
    SKIPPED_DELIVERED = "skipped_delivered"
    SKIPPED_DEAD = "skipped_dead"
    PARKED = "parked"  # on the retry topic: terminal for this offset, not for the delivery


_REDIS_AWAY = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
)


_REFUSAL_LOG_EVERY = 5.0  # seconds between two log lines about the same refusal
_refusals_logged: dict[str, float] = {}


def _log_refusal(exc: redis.exceptions.ResponseError) -> None:
    """One line per kind of refusal every few seconds, not one per waiting delivery and retry."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    now = time.monotonic()
    if now - _refusals_logged.get(text, -_REFUSAL_LOG_EVERY) >= _REFUSAL_LOG_EVERY:
        _refusals_logged[text] = now
        logger.error("redis refused a delivery claim (%s): deliveries wait, nothing is sent without a "
                     "claim; fix Redis (memory, ACL, a read-only replica) and they go on", text)


async def until_redis(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Redis is required for the claim: while it is away, or refuses the call (out of memory, a
    read-only replica, an ACL without the command), the delivery waits (it stays non-terminal)."""
    delay = 0.1
    while True:
        try:
            return await fn(*args, **kw)
        except _REDIS_AWAY as exc:
            logger.warning("redis unavailable (%s), retrying in %.1fs", type(exc).__name__, delay)
        except redis.exceptions.ResponseError as exc:
            _log_refusal(exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


class Outcomes:
    """Records each decision on a delivery: audit entry, metrics, dead letter and claim verdict."""

    def __init__(
        self, config: Callable[[], PipelineConfig], publisher: Publisher, claims: ClaimStore
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._claims = claims

    def audit(self, entry: AuditEntry) -> None:
        self._publisher.fire(self._config().kafka.topics.audit, entry.alert_id, entry.to_json())

    def log(self, alert: Alert, decision: Decision, channel: str, **kw: Any) -> None:
        """One decision-log record about the delivery of ``alert`` to ``channel``."""
        cfg = self._config()
        got = RECEIVED.get()
        if got is not None:
            kw["received_ms"], kw["fired_ms"], kw["replayed"] = got
        if alert.pii is not None and kw.get("reason"):
            kw["reason"] = privacy.scrub(alert, kw["reason"])
        self.audit(
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

    async def muted(self, alert: Alert, name: str, key: str, attempts: int, reason: str) -> Outcome:
        await until_redis(self._claims.release, key)
        self.log(alert, "muted", name, attempt=attempts, reason=f"channel muted: {reason}")
        child(m.OUTCOMES, self._config().tenant, name, "muted").inc()
        return Outcome.MUTED

    def skipped(self, alert: Alert, name: str, res: ClaimResult) -> Outcome:
        """The claim says it was delivered or dead-lettered already: not sent again."""
        outcome = Outcome.SKIPPED_DELIVERED if res is ClaimResult.DELIVERED else Outcome.SKIPPED_DEAD
        self.log(
            alert,
            outcome.value,
            name,
            reason="already " + ("delivered" if res is ClaimResult.DELIVERED else "dead-lettered"),
        )
        child(m.OUTCOMES, self._config().tenant, name, outcome.value).inc()
        return outcome

    def delivered(
        self,
        alert: Alert,
        name: str,
        ctx: DeliveryContext,
        *,
        key: str,
        attempts: int,
        status: int | None,
        took: float,
        marked: bool,
        note: str = "",
    ) -> Outcome:
        tenant = self._config().tenant
        if not marked:
            logger.warning("claim on %s had expired before the delivered mark", key)
        child(m.ATTEMPTS, tenant, name, "delivered").inc()
        child(m.OUTCOMES, tenant, name, "delivered").inc()
        done_ms = time.time() * 1000
        child(m.DELIVERY_LATENCY, tenant, name).observe(max(0.0, done_ms / 1000 - ctx.produced_s))
        if not ctx.replay:  # a replay's age is the operator's doing, not the pipeline's latency
            if alert.ingest_time_ms:
                child(m.E2E_LATENCY, alert.pipeline, name, "ingest").observe(
                    max(0.0, (done_ms - alert.ingest_time_ms) / 1000)
                )
            child(m.E2E_LATENCY, alert.pipeline, name, "event").observe(
                max(0.0, (done_ms - alert.event_time_ms) / 1000)
            )
        self.log(
            alert, "delivered", name, attempt=attempts, status_code=status, latency_ms=round(took * 1000, 2),
            reason=note,
        )
        return Outcome.DELIVERED

    async def give_up(
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
        """Dead-letter the delivery (acked), mark its claim dead, record why."""
        cfg = self._config()
        now_ms = int(time.time() * 1000)
        reason, last_detail = privacy.scrub(alert, reason), privacy.scrub(alert, last_detail)
        dl = DeadLetter(
            alert=privacy.stored(alert),
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
        await self.publish_until_acked(cfg.kafka.topics.dead_letter, key, dl.to_json(), dl.headers())
        await until_redis(self._claims.mark_dead, key)
        child(m.DEAD_LETTERS, cfg.tenant, name).inc()
        child(m.OUTCOMES, cfg.tenant, name, "dead_lettered").inc()
        self.log(
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

    async def dead_letter_invalid(self, value: bytes, key: bytes | None, reason: str) -> None:
        """A message that is not an alert (or not a parked delivery) goes to the dead-letter topic."""
        cfg = self._config()
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
        await self.publish_until_acked(cfg.kafka.topics.dead_letter, key or b"", dl.to_json(), dl.headers())
        logger.warning("invalid message on the alerts topic dead-lettered: %s", reason)

    async def publish_until_acked(self, topic: str, key: bytes | str, value: bytes, headers: Any) -> None:
        delay = 0.2
        while True:
            try:
                await self._publisher.send(topic, key, value, headers)
                return
            except KafkaException as exc:
                logger.warning("dead-letter write to %s failed, retrying in %.1fs: %s", topic, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
