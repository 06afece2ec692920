"""The two-phase delivery claim in Redis: a short claim before a send, a long-lived mark after it.

Key ``<prefix>:dlv:<alert id>:<status>:<channel>`` holds ``c:<owner>`` (claimed, PX claim TTL),
``d`` (delivered, EX dedup TTL) or ``x`` (dead-lettered, EX dedup TTL). A redelivered alert whose
key says ``d`` is skipped; one whose claim expired (the sender crashed) is claimed again and sent
with the same Idempotency-Key. The claim is a short lease (5 s by default, so a crashed sender's
deliveries go out again within seconds); ``renew_loop`` extends the leases of sends still waiting
for their receiver. Marks go to the head of the next batch: the window between a receiver's answer
and the mark is what a crash turns into a repeat. Every check-and-set runs inside one Lua script,
so it is atomic; the calls of all concurrent deliveries go to Redis as one script call per batch
(``_BATCH``), which costs far less Python than a pipeline of one EVALSHA each (redis-py packs and
parses every command in Python). The keys of a batch are many: this needs one Redis, not a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import time
from enum import Enum
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

__all__ = ["ClaimResult", "Claims"]

logger = logging.getLogger(__name__)

DELIVERED = "d"
DEAD = "x"

# KEYS: the keys; ARGV: owner value, claim ms, mark ttl s, then per key an op and its argument:
# a (acquire; 1 = a dead mark counts), d / x (mark delivered / dead), r (release)
_BATCH = """
local owner, claim_ms, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 1, #KEYS do
  local k, op, arg = KEYS[i], ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local v = redis.call('GET', k)
  if op == 'a' then
    if v == 'd' then out[i] = 'delivered'
    elseif v == 'x' and arg == '1' then out[i] = 'dead'
    elseif v and v ~= 'x' and v ~= owner then out[i] = 'busy'
    else
      redis.call('SET', k, owner, 'PX', claim_ms)
      out[i] = 'ok'
    end
  elseif op == 'd' or op == 'x' then
    if v == 'd' then out[i] = 'delivered'
    else
      redis.call('SET', k, op, 'EX', ttl)
      if v == owner then out[i] = 'ok' else out[i] = 'lost' end
    end
  else
    if v == owner then redis.call('DEL', k) end
    out[i] = 'released'
  end
end
return out
"""


class ClaimResult(Enum):
    OK = "ok"  # claimed by us (new, re-claimed after expiry, or extended)
    DELIVERED = "delivered"  # already delivered: skip
    DEAD = "dead"  # already dead-lettered (not a replay): skip
    BUSY = "busy"  # another live worker holds the claim: wait for it to finish or expire


class Claims:
    """Claim, mark delivered, mark dead-lettered, release; one instance per worker (``owner``).

    Calls from all concurrent deliveries are batched: whatever queued while one batch was in
    flight goes out as the next (one EVALSHA of ``_BATCH``), so thousands of claims per second
    cost a few round trips and little Python per call. A connection error fails the whole batch;
    the caller retries.
    """

    MAX_BATCH = 1000

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        owner: str,
        claim_ttl: float = 5.0,
        mark_ttl: float = 86_400.0,
    ) -> None:
        self._r = client
        self.prefix = prefix
        self._owner = "c:" + owner
        self.claim_ttl = claim_ttl
        self.mark_ttl = mark_ttl
        self._sha = hashlib.sha1(_BATCH.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
        self._fixed = [self._owner, int(claim_ttl * 1000), int(mark_ttl)]
        self._queue: list[tuple[str, str, str, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._held: dict[str, float] = {}  # delivery key -> monotonic time its send began
        self._renewer: asyncio.Task[None] | None = None

    def key(self, delivery_key: str) -> str:
        return f"{self.prefix}:dlv:{delivery_key}"

    async def _call(self, op: str, key: str, arg: str = "-") -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if op == DELIVERED or op == DEAD:  # a verdict first: until it lands, a crash repeats the send
            self._queue.insert(0, (op, key, arg, fut))
        else:
            self._queue.append((op, key, arg, fut))
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="claims-flush")
        res = await fut
        return res.decode() if isinstance(res, bytes) else res

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
                await self._run(batch)

    async def _run(self, batch: list[tuple[str, str, str, asyncio.Future[Any]]]) -> None:
        try:
            try:
                results = await self._script(batch)
            except redis.exceptions.NoScriptError:  # Redis restarted or flushed its script cache
                await self._r.script_load(_BATCH)
                results = await self._script(batch)
        except (redis.exceptions.RedisError, OSError) as exc:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (*_, fut), res in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def _script(self, batch: list[tuple[str, str, str, asyncio.Future[Any]]]) -> list[Any]:
        keys = [key for _, key, _, _ in batch]
        args: list[Any] = list(self._fixed)
        for op, _, arg, _ in batch:
            args.append(op)
            args.append(arg)
        reply = self._r.evalsha(self._sha, len(keys), *keys, *args)
        results: list[Any] = await reply if inspect.isawaitable(reply) else reply
        return results

    def start_renewing(self) -> None:
        """Run ``renew_loop`` until ``close`` (after the worker's last sends, so none loses its lease)."""
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self.renew_loop(), name="claim-leases")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def acquire(self, delivery_key: str, *, replay: bool = False) -> ClaimResult:
        """Phase one. ``replay`` ignores a dead-letter mark (``alertpipe dlq replay`` sends it again)."""
        res = await self._call("a", self.key(delivery_key), "0" if replay else "1")
        return ClaimResult(res)

    def hold(self, delivery_key: str) -> None:
        """A send under our claim began: ``renew_loop`` keeps the lease alive until ``unhold``."""
        self._held[delivery_key] = time.monotonic()

    def unhold(self, delivery_key: str) -> None:
        self._held.pop(delivery_key, None)

    async def renew_loop(self) -> None:
        """Every third of the lease, extend the claims of sends older than that (until cancelled)."""
        every = self.claim_ttl / 3
        while True:
            await asyncio.sleep(every)
            since = time.monotonic() - every
            keys = [k for k, t in self._held.items() if t <= since]
            if not keys:
                continue
            results = await asyncio.gather(
                *(self._call("a", self.key(k), "1") for k in keys), return_exceptions=True
            )
            for k, res in zip(keys, results, strict=True):
                if isinstance(res, BaseException):
                    logger.warning("could not extend the claim on %s (next try in %.1f s): %s", k, every, res)
                elif res == "busy":
                    logger.warning("claim on %s was lost to another worker during a slow send", k)

    async def mark_delivered(self, delivery_key: str) -> bool:
        """Phase two after a 2xx; False when our claim had expired meanwhile (logged, still marked)."""
        res = await self._call(DELIVERED, self.key(delivery_key))
        return res in ("ok", "delivered")

    async def mark_dead(self, delivery_key: str) -> None:
        await self._call(DEAD, self.key(delivery_key))

    async def release(self, delivery_key: str) -> None:
        """Drop our claim without a verdict (muted meanwhile, shutting down)."""
        await self._call("r", self.key(delivery_key))

    async def state(self, delivery_key: str) -> str | None:
        v = await self._r.get(self.key(delivery_key))
        if v is None:
            return None
        text = v.decode() if isinstance(v, bytes) else str(v)
        return {"d": "delivered", "x": "dead-lettered"}.get(text, "claimed")
