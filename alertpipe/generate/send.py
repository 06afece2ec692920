"""Open-loop senders of a Plan: batched HTTP POSTs to the ingestor, or records straight to Kafka.

The loop wakes every ``linger_ms``, takes every send whose planned time has come, and fires them
as requests without waiting for earlier answers: the schedule is kept whatever the system does.
Each request records its planned time (its earliest event's), when it went out and when it was
answered, so the generator's own lateness is in the ledger next to the system's. With ``retry_for``
the HTTP sender retries a request that got no answer, 429 or 503 (as a device's client would) for
that long; the record keeps its first send time and the final answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import orjson

from alertpipe.generate.ledger import Ledger, RequestRecord
from alertpipe.generate.plan import Plan, Send

__all__ = ["Progress", "run_http", "run_kafka"]

Progress = Callable[[Ledger, int, bool], None]  # (ledger, sends so far, finished)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _chunks(due: list[Send], batch: int) -> Iterator[tuple[list[Send], str]]:
    """Requests for the sends due now: oversized events alone, the rest ``batch`` at a time."""
    normal = [s for s in due if s.kind != "oversized"]
    for s in due:
        if s.kind == "oversized":
            yield [s], "oversized"
    for i in range(0, len(normal), batch):
        part = normal[i:i + batch]
        yield part, "events" if any(s.kind != "malformed" for s in part) else "malformed"


async def _open_loop(plan: Plan, fire: Callable[[list[Send], str, int], None], linger_ms: float,
                     batch: int, ledger: Ledger, progress: Progress | None) -> int:
    """Hand every due batch to ``fire`` on schedule; the number of sends."""
    start = plan.start_ms / 1000
    wait = max(0.0, start - time.time())
    if wait:
        await asyncio.sleep(wait)
    it = plan.sends()
    nxt: Send | None = next(it, None)
    n = 0
    last_report = 0.0
    while nxt is not None:
        now = time.time() - start
        due: list[Send] = []
        while nxt is not None and nxt.at <= now:
            due.append(nxt)
            nxt = next(it, None)
        n += len(due)
        for chunk, kind in _chunks(due, batch):
            fire(chunk, kind, plan.start_ms + round(chunk[0].at * 1000))
        if progress is not None and now - last_report >= 0.25:
            last_report = now
            progress(ledger, n, False)
        if nxt is not None:
            await asyncio.sleep(max(linger_ms / 1000, nxt.at - (time.time() - start)))
    return n


RETRIED = frozenset({0, 429, 503})  # no answer, too many in flight, the broker did not acknowledge


async def run_http(plan: Plan, url: str, api_key: str, *, batch: int = 500, linger_ms: float = 5.0,
                   connections: int = 64, progress: Progress | None = None,
                   retry_for: float = 0.0) -> Ledger:
    """POST the plan to ``url`` (…/v1/events) as JSON arrays; the ledger once every answer is in.
    ``retry_for``: seconds a request that got no answer, 429 or 503 is sent again (0: never)."""
    ledger = Ledger(plan, url)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    tasks: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                     timeout=timeout) as session:

        async def post(chunk: list[Send], kind: str, planned: int) -> None:
            body = orjson.dumps([s.body for s in chunk])
            events = sum(1 for s in chunk if s.kind != "malformed")
            sent = _now_ms()
            deadline = time.monotonic() + retry_for
            delay = 0.05
            while True:
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status not in RETRIED or time.monotonic() + delay > deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            ledger.requests.append(RequestRecord(planned, sent, _now_ms(), status, events, kind))

        def fire(chunk: list[Send], kind: str, planned: int) -> None:
            t = asyncio.create_task(post(chunk, kind, planned))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        n = await _open_loop(plan, fire, linger_ms, batch, ledger, progress)
        while tasks:
            await asyncio.gather(*list(tasks))
    ledger.finished_ms = _now_ms()
    if progress is not None:
        progress(ledger, n, True)
    return ledger


class _Acks:
    """One batch's delivery reports (producer poll thread) counted down to one ledger record."""

    def __init__(self, ledger: Ledger, planned: int, n: int, events: int, kind: str) -> None:
        self.ledger, self.planned, self.n, self.events, self.kind = ledger, planned, n, events, kind
        self.sent = _now_ms()
        self.failed = 0
        self.lock = threading.Lock()

    def on_delivery(self, err: Any, _msg: Any) -> None:
        with self.lock:
            self.n -= 1
            if err is not None:
                self.failed += 1
            if self.n == 0:
                status = 202 if not self.failed else 0
                self.ledger.requests.append(
                    RequestRecord(self.planned, self.sent, _now_ms(), status, self.events, self.kind))


async def run_kafka(plan: Plan, bootstrap: str, topic: str, *, linger_ms: float = 5.0,
                    progress: Progress | None = None) -> Ledger:
    """Produce the plan's events straight to the events topic (keyed by deviceId, as the ingestor
    does; malformed events as they are, for the evaluator's dead-letter path)."""
    from confluent_kafka import KafkaException, Producer

    ledger = Ledger(plan, f"kafka:{topic}")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True,
                         "acks": "all", "compression.type": "lz4", "client.id": "alertpipe-generate"})
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=poll, name="generate-poll", daemon=True)
    poller.start()

    def fire(chunk: list[Send], kind: str, planned: int) -> None:
        acks = _Acks(ledger, planned, len(chunk), sum(1 for s in chunk if s.kind != "malformed"), kind)
        for s in chunk:
            key = str(s.body.get("deviceId", "")).encode()
            try:
                producer.produce(topic, orjson.dumps(s.body), key, on_delivery=acks.on_delivery)
            except (BufferError, KafkaException) as exc:  # recorded as a failed send
                acks.on_delivery(exc, None)

    try:
        n = await _open_loop(plan, fire, linger_ms, 10_000, ledger, progress)
        await asyncio.get_running_loop().run_in_executor(None, producer.flush, 30.0)
    finally:
        stop.set()
        poller.join(5)
    ledger.finished_ms = _now_ms()
    if progress is not None:
        progress(ledger, n, True)
    return ledger
