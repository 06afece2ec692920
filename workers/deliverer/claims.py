"""The two-phase delivery claim in Redis: a short claim before a send, a long-lived mark after it.

Key ``<prefix>:dlv:<alert id>:<status>:<channel>`` holds ``c:<owner>`` (claimed, PX claim TTL),
``d`` (delivered, EX dedup TTL) or ``x`` (dead-lettered, EX dedup TTL). A redelivered alert whose
key says ``d`` is skipped; one whose claim expired (the sender crashed) is claimed again and sent
with the same Idempotency-Key. Each phase is one Lua script, so check-and-set is atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from enum import Enum
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

__all__ = ["ClaimResult", "Claims"]

logger = logging.getLogger(__name__)

DELIVERED = "d"
DEAD = "x"

# KEYS[1] key; ARGV: owner value, claim ms, honour-dead (1/0)
_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v == 'd' then return 'delivered' end
if v == 'x' and ARGV[3] == '1' then return 'dead' end
if v and v ~= 'x' and v ~= ARGV[1] then return 'busy' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'ok'
"""

# KEYS[1] key; ARGV: owner value, final value, ttl seconds
_FINISH = """
local v = redis.call('GET', KEYS[1])
if v == 'd' then return 'delivered' end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if v == ARGV[1] then return 'ok' end
return 'lost'
"""

# KEYS[1] key; ARGV: owner value
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClaimResult(Enum):
    OK = "ok"  # claimed by us (new, re-claimed after expiry, or extended)
    DELIVERED = "delivered"  # already delivered: skip
    DEAD = "dead"  # already dead-lettered (not a replay): skip
    BUSY = "busy"  # another live worker holds the claim: wait for it to finish or expire


class Claims:
    """Claim, mark delivered, mark dead-lettered, release; one instance per worker (``owner``).

    Calls from all concurrent deliveries are batched: whatever queued while one pipeline was in
    flight goes out as the next pipeline (EVALSHA each), so thousands of claims per second cost a
    few round trips and little Python per call. A connection error fails the whole batch; the
    caller retries.
    """

    MAX_BATCH = 1000

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        owner: str,
        claim_ttl: float = 30.0,
        mark_ttl: float = 86_400.0,
    ) -> None:
        self._r = client
        self.prefix = prefix
        self._owner = "c:" + owner
        self.claim_ttl = claim_ttl
        self.mark_ttl = mark_ttl
        self._src = {"acquire": _ACQUIRE, "finish": _FINISH, "release": _RELEASE}
        self._sha = {n: hashlib.sha1(src.encode()).hexdigest() for n, src in self._src.items()}  # noqa: S324
        self._queue: list[tuple[str, str, list[Any], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def key(self, delivery_key: str) -> str:
        return f"{self.prefix}:dlv:{delivery_key}"

    async def _call(self, script: str, key: str, args: list[Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, key, args, fut))
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

    async def _run(self, batch: list[tuple[str, str, list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._pipeline(batch)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                for src in self._src.values():  # Redis restarted or flushed its script cache
                    await self._r.script_load(src)
                results = await self._pipeline(batch)
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

    async def _pipeline(self, batch: list[tuple[str, str, list[Any], asyncio.Future[Any]]]) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        for script, key, args, _ in batch:
            pipe.evalsha(self._sha[script], 1, key, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def acquire(self, delivery_key: str, *, replay: bool = False) -> ClaimResult:
        """Phase one. ``replay`` ignores a dead-letter mark (``alertpipe dlq replay`` sends it again)."""
        res = await self._call(
            "acquire",
            self.key(delivery_key),
            [self._owner, int(self.claim_ttl * 1000), "0" if replay else "1"],
        )
        return ClaimResult(res)

    async def mark_delivered(self, delivery_key: str) -> bool:
        """Phase two after a 2xx; False when our claim had expired meanwhile (logged, still marked)."""
        res = await self._call("finish", self.key(delivery_key), [self._owner, DELIVERED, int(self.mark_ttl)])
        return res in ("ok", "delivered")

    async def mark_dead(self, delivery_key: str) -> None:
        await self._call("finish", self.key(delivery_key), [self._owner, DEAD, int(self.mark_ttl)])

    async def release(self, delivery_key: str) -> None:
        """Drop our claim without a verdict (muted meanwhile, shutting down)."""
        await self._call("release", self.key(delivery_key), [self._owner])

    async def state(self, delivery_key: str) -> str | None:
        v = await self._r.get(self.key(delivery_key))
        if v is None:
            return None
        text = v.decode() if isinstance(v, bytes) else str(v)
        return {"d": "delivered", "x": "dead-lettered"}.get(text, "claimed")
