"""One delivery of one alert to one channel, as a small state machine.

    GATE ──► CIRCUIT ──► SEND ──► (delivered)
     ▲          │          │
     │          ▼          ▼
     └──────── WAIT ◄── FAILED ──► (dead-lettered | parked)

GATE waits while delivery is stopped and ends a muted or unknown channel; CIRCUIT asks the breaker
(open: wait, park, or give up past the age budget); SEND takes a rate-limit token and a slot, the
claim, sends and marks the claim delivered inside the slot (a claim someone else holds goes to WAIT);
FAILED feeds the breaker and ``policy.decide_retry``: give up, park, or WAIT for the backoff. Every
state returns the next one or the terminal ``Outcome``; nothing else leaves the machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.deliverer import metrics as m
from alertpipe.workers.deliverer.backends import ClaimStore
from alertpipe.workers.deliverer.channels import ChannelState, ChannelTable, is_muted, is_paused
from alertpipe.workers.deliverer.claims import ClaimResult
from alertpipe.workers.deliverer.context import DeliveryContext
from alertpipe.workers.deliverer.metrics import child
from alertpipe.workers.deliverer.outcomes import Outcome, Outcomes, until_redis
from alertpipe.workers.deliverer.parking import Parking
from alertpipe.workers.deliverer.policy import BreakerState, backoff_delay, decide_retry
from alertpipe.workers.deliverer.senders import Sender, SendResult, SetupError
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.errors import DeliveryError
from alertpipe.workers.tracing import OUTGOING_TRACEPARENT, Span, SpanKind, Tracing, TracingHolder

__all__ = ["Attempt", "Seams", "Step"]

logger = logging.getLogger(__name__)


class Step(Enum):
    GATE = "gate"  # wait while delivery is stopped; a muted or unknown channel ends here
    CIRCUIT = "circuit"  # the breaker lets a send through, else wait, park or give up
    SEND = "send"  # token, slot, claim, send, delivered mark
    FAILED = "failed"  # the send failed: give up, park, or back off
    WAIT = "wait"  # sleep, then from the gate again


@dataclass(frozen=True)
class Seams:
    """What a delivery works with; the Deliverer wires the real ones, unit tests in-memory ones."""

    settings: DelivererSettings
    config: Callable[[], PipelineConfig]  # the config in use
    refresh: Callable[[], PipelineConfig]  # the newest config (swapped in if it changed)
    channels: ChannelTable
    claims: ClaimStore
    sender: Sender
    outcomes: Outcomes
    parking: Parking
    rand: Callable[[], float]
    tracing: TracingHolder = field(default_factory=lambda: TracingHolder("deliverer"))


def _now_utc() -> datetime:
    return datetime.now(tz=UTC)


class Attempt:
    """Delivers ``alert`` to channel ``name`` until an outcome; ``ctx`` carries earlier passes' attempts."""

    def __init__(self, seams: Seams, alert: Alert, name: str, ctx: DeliveryContext) -> None:
        self.s = seams
        self.alert = alert
        self.name = name
        self.ctx = ctx
        self.key = alert.delivery_key(name)
        self.attempts = ctx.attempts
        self.first_ms = ctx.first_ms
        self.last_status: int | None = ctx.last_status
        self.last_detail = ctx.last_detail
        self.local = 0  # attempts made by this pass (the rest were made before the delivery was parked)
        self.cfg: PipelineConfig
        self.ch: ChannelState
        self.err: DeliveryError
        self.took = 0.0
        self.pause = 0.0  # seconds WAIT sleeps
        self.span: Span | None = None  # spec.tracing: this delivery's span, when its alert was traced

    async def run(self) -> Outcome:
        tracing = self.s.tracing.current
        if tracing.enabled and self.ctx.trace is not None:
            self.span = tracing.start("alertpipe.deliver", self.ctx.trace, kind=SpanKind.CLIENT, attributes={
                "alertpipe.channel": self.name,
                "alertpipe.alert.id": self.alert.id,
                "alertpipe.alert.status": self.alert.status,
                "alertpipe.rule": self.alert.rule,
                "alertpipe.delivery.prior_attempts": self.attempts,
            })
        span = self.span
        if span is None:
            return await self._run()
        token = OUTGOING_TRACEPARENT.set(Tracing.traceparent(span))  # the webhook request carries it
        try:
            outcome = await self._run()
        except BaseException as exc:
            span.record_exception(exc)
            raise
        else:
            span.set_attributes({"alertpipe.delivery.outcome": outcome.value,
                                 "alertpipe.delivery.attempts": self.attempts})
            if outcome is Outcome.DEAD:
                Tracing.error(span, self.last_detail or "dead-lettered")
            return outcome
        finally:
            OUTGOING_TRACEPARENT.reset(token)
            span.end()

    async def _run(self) -> Outcome:
        state: Step | Outcome = Step.GATE
        while True:
            match state:
                case Step.GATE:
                    state = await self._gate()
                case Step.CIRCUIT:
                    state = await self._circuit()
                case Step.SEND:
                    state = await self._send()
                case Step.FAILED:
                    state = await self._failed()
                case Step.WAIT:
                    await asyncio.sleep(self.pause)
                    state = Step.GATE
                case Outcome():
                    return state

    async def _gate(self) -> Step | Outcome:
        cfg = self.s.refresh()
        while is_paused(cfg, _now_utc()):
            await asyncio.sleep(0.2)
            cfg = self.s.refresh()
        self.cfg = cfg
        muted = is_muted(cfg, self.name, _now_utc())
        if muted is not None:
            return await self.s.outcomes.muted(self.alert, self.name, self.key, self.attempts, muted)
        ch = self.s.channels.get(self.name, self.s.config())
        if ch is None:
            reason = f"channel {self.name!r} is not defined in pipeline {cfg.pipeline!r}"
            return await self.s.outcomes.give_up(
                self.alert, self.name, self.key, reason, self.attempts, None, "", self.first_ms
            )
        self.ch = ch
        return Step.CIRCUIT

    async def _circuit(self) -> Step | Outcome:
        ch, ctx = self.ch, self.ctx
        age = time.time() - ctx.origin_s
        wait = ch.breaker.allow(time.monotonic())
        child(m.CIRCUIT_STATE, self.cfg.tenant, self.name).set(ch.breaker.state.value)
        if wait <= 0:
            return Step.SEND
        if age + wait > ch.budget.max_age:
            return await self._give_up(f"circuit open; retry budget exhausted (alert age {age:.1f}s)")
        if self.s.parking.topic:
            r = ch.budget
            delay = max(wait, backoff_delay(ctx.hops + 1, r.initial_backoff, r.max_backoff, self.s.rand))
            delay = min(delay, max(wait, r.max_age - age + 0.05))  # back by max age, to dead-letter
            return await self._park(delay, "circuit open", release=self.local > 0)
        self.pause = min(wait, 1.0)
        return Step.WAIT

    async def _send(self) -> Step | Outcome:
        ch, claims = self.ch, self.s.claims
        probe = ch.breaker.state is BreakerState.HALF_OPEN
        delay = ch.bucket.reserve(time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
        await ch.sem.acquire()
        if not probe and ch.breaker.state is not BreakerState.CLOSED:
            # the circuit opened while this one waited for a slot: back to the breaker check
            ch.sem.release()
            return Step.GATE
        marked = False
        try:
            res = await until_redis(claims.acquire, self.key, replay=self.ctx.replay)
            if res is ClaimResult.DELIVERED or res is ClaimResult.DEAD:
                if probe:
                    ch.breaker.record_neutral()
                return self.s.outcomes.skipped(self.alert, self.name, res)
            if res is ClaimResult.BUSY:
                if probe:
                    ch.breaker.record_neutral()
                # Another worker holds the claim (rebalance): wait until it delivers or its claim expires.
                self.pause = 0.5
                return Step.WAIT
            result, err = await self._claimed_send(claims)
            if err is None:
                # phase two inside the slot: the claim is young, and Redis load stays bounded
                marked = await until_redis(claims.mark_delivered, self.key)
        finally:
            claims.unhold(self.key)
            ch.sem.release()
        tenant = self.cfg.tenant
        child(m.SEND_LATENCY, tenant, self.name).observe(self.took)
        if err is not None:
            self.err = err
            return Step.FAILED
        ch.breaker.record_success()
        child(m.CIRCUIT_STATE, tenant, self.name).set(0)
        assert result is not None  # noqa: S101 - a send without an error has a result
        return self.s.outcomes.delivered(
            self.alert,
            self.name,
            self.ctx,
            key=self.key,
            attempts=self.attempts,
            status=result.status,
            took=self.took,
            marked=marked,
            note=result.note,
        )

    async def _claimed_send(self, claims: ClaimStore) -> tuple[SendResult | None, DeliveryError | None]:
        """One send under our claim (kept alive while it waits); the result or the error."""
        self.attempts += 1
        self.local += 1
        if not self.first_ms:
            self.first_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        claims.hold(self.key)
        result: SendResult | None = None
        try:
            result = await self.s.sender.send(self.alert, self.ch.spec, self.key, self.ctx.raw)
        except DeliveryError as exc:
            err: DeliveryError | None = exc
        except Exception as exc:  # a bug or an input we did not foresee: retry, then DLQ
            logger.exception("unexpected error sending %s", self.key)
            err = DeliveryError(f"unexpected {type(exc).__name__}: {exc}", retryable=True)
        else:
            err = None
        self.took = time.perf_counter() - t0
        if self.span is not None:
            self._trace_attempt(result, err)
        return result, err

    def _trace_attempt(self, result: SendResult | None, err: DeliveryError | None) -> None:
        """One span event per send: its number, outcome, status and time."""
        assert self.span is not None  # noqa: S101 - called for a traced delivery only
        status = result.status if result is not None else err.status if err is not None else None
        attrs: dict[str, str | int | float | bool] = {
            "alertpipe.delivery.attempt": self.attempts,
            "alertpipe.delivery.outcome": "delivered" if err is None else "failed",
            "alertpipe.delivery.seconds": round(self.took, 6),
        }
        if status is not None:
            attrs["http.response.status_code"] = status
        if err is not None:
            attrs["alertpipe.delivery.retryable"] = err.retryable
            attrs["alertpipe.delivery.error"] = err.reason[:300]
        self.span.add_event("attempt", attrs)

    async def _failed(self) -> Step | Outcome:
        ch, err, tenant = self.ch, self.err, self.cfg.tenant
        self.last_status, self.last_detail = err.status, err.reason
        if isinstance(err, SetupError) or (err.status is not None and not err.retryable):
            ch.breaker.record_neutral()
        else:
            ch.breaker.record_failure(time.monotonic())
        child(m.CIRCUIT_STATE, tenant, self.name).set(ch.breaker.state.value)
        decision = decide_retry(
            attempts=self.attempts,
            retryable=err.retryable,
            retry_after=err.retry_after,
            age=time.time() - self.ctx.origin_s,
            budget=ch.budget,
            rand=self.s.rand,
        )
        if not decision.retry:
            child(m.ATTEMPTS, tenant, self.name, "failed").inc()
            why = err.reason if not err.retryable else f"{decision.reason}; last error: {err.reason}"
            return await self._give_up(why, latency=self.took)
        child(m.ATTEMPTS, tenant, self.name, "retry").inc()
        child(m.RETRIES, tenant, self.name).inc()
        settings = self.s.settings
        if self.s.parking.topic and (
            self.local >= settings.local_attempts
            or decision.delay > settings.local_max_delay
            or ch.breaker.state is BreakerState.OPEN
        ):
            reason = f"{err.reason} ({decision.reason})"
            return await self._park(
                decision.delay, reason, release=True, status_code=err.status, latency=self.took
            )
        self.s.outcomes.log(
            self.alert,
            "retry",
            self.name,
            attempt=self.attempts,
            status_code=err.status,
            latency_ms=round(self.took * 1000, 2),
            reason=f"{err.reason} ({decision.reason})",
            delay_s=round(decision.delay, 3),
        )
        self.pause = decision.delay
        return Step.WAIT

    async def _give_up(self, reason: str, latency: float | None = None) -> Outcome:
        return await self.s.outcomes.give_up(
            self.alert,
            self.name,
            self.key,
            reason,
            self.attempts,
            self.last_status,
            self.last_detail,
            self.first_ms,
            latency=latency,
        )

    async def _park(
        self,
        delay: float,
        reason: str,
        *,
        release: bool,
        status_code: int | None = None,
        latency: float | None = None,
    ) -> Outcome:
        return await self.s.parking.park(
            self.alert,
            self.name,
            self.ctx,
            delay,
            reason,
            attempts=self.attempts,
            first_ms=self.first_ms,
            last_status=self.last_status,
            last_detail=self.last_detail,
            release=release,
            status_code=status_code,
            latency=latency,
        )
