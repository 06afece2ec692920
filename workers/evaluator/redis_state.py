"""What the evaluator keeps in Redis: input dedup keys, partition checkpoints, gap records.

Dedup is one EVALSHA per consumed batch (not one round trip per event). Each key remembers where
the event was first seen (``partition:offset``): a copy at another offset is a duplicate, while the
same record read again after a crash (the checkpoint is older than the dedup key) is evaluated
again — otherwise a restart would skip events whose effect was lost with the process.

A partition's checkpoint is a full snapshot (``...:ckpt:<topic>:<partition>``) plus the list of
deltas written after it (``...:delta``); a full one replaces both, a delta is appended, each in
the transaction that also adds the gap records.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import redis

__all__ = [
    "DUPLICATE", "NEW", "OWNER_WIDTH", "SAME_RECORD", "RedisState", "dedup_key", "dedup_key_parts",
    "dedup_keys", "owner",
]

# Keys, partitions and offsets travel as three fixed-width blobs and the answer comes back as one
# flag byte per key: packing and parsing 10,000 separate arguments and replies cost ~6 µs per event
# in redis-py, this well under 1 µs. The script builds each owner itself (the same text as owner()),
# so the client neither formats owners nor compares them.
# (The keys are not declared in KEYS: fine for one Redis, not for Redis Cluster.)
def _dedup_script(lookup: str) -> str:
    """The dedup script around ``lookup``: Lua setting ``v`` to the key's owner before this call
    (nil when it had none, in which case the key must hold ``o`` after it)."""
    return f"""
local keys, parts, offs = ARGV[1], ARGV[2], ARGV[3]
local klen, olen, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local out = {{}}
for i = 0, #keys / klen - 1 do
  local k = string.sub(keys, i * klen + 1, (i + 1) * klen)
  local p = struct.unpack('<d', parts, i * 8 + 1)
  local off = struct.unpack('<d', offs, i * 8 + 1)
  local o = string.format('%d:%d', p, off)
  o = o .. string.rep(' ', olen - #o)
  {lookup}
  if not v then
    out[i + 1] = '0'
  elseif v == o then
    out[i + 1] = '1'
  else
    out[i + 1] = '2'
  end
end
return table.concat(out)
"""


_DEDUP = _dedup_script(
    "local v = redis.call('GET', k)\n  if not v then redis.call('SET', k, o, 'EX', ttl) end")
# The same with one command per new key (SET NX GET answers the value it found, and sets it only
# when there was none): Redis >= 7.0; about a third less Redis time per batch of new keys. An older
# Redis answers "syntax error" at the first key, before any write: then _DEDUP is used.
_DEDUP_SET_GET = _dedup_script("local v = redis.call('SET', k, o, 'NX', 'EX', ttl, 'GET')")
OWNER_WIDTH = 24  # "partition:offset", space-padded
NEW, SAME_RECORD, DUPLICATE = ord("0"), ord("1"), ord("2")  # the flag bytes of RedisState.check


def owner(partition: int, offset: int) -> bytes:
    """The dedup value: where an event was first seen, fixed width (the script builds the same)."""
    return (b"%d:%d" % (partition, offset)).ljust(OWNER_WIDTH)


def dedup_key_parts(prefix: str, tenant: str) -> tuple[bytes, bytes]:
    """(head, scope) of one pipeline's dedup keys: key = head + blake2b(scope deviceId \x1f seq, 12)
    (the native decoder builds the keys from these)."""
    return prefix.encode() + b":ev:", tenant.encode() + b"\x1f"


def dedup_keys(prefix: str, tenant: str) -> Callable[[str, int], bytes]:
    """``key(deviceId, seq)`` for one pipeline: the idempotency key hash(tenant, deviceId, seq)."""
    head, scope = dedup_key_parts(prefix, tenant)
    blake = hashlib.blake2b

    def key(device: str, seq: int) -> bytes:
        return head + blake(b"%s%s\x1f%d" % (scope, device.encode(), seq), digest_size=12).digest()

    return key


def dedup_key(prefix: str, tenant: str, device: str, seq: int) -> bytes:
    """The idempotency key of one input event: hash(tenant, deviceId, seq)."""
    return dedup_keys(prefix, tenant)(device, seq)


class RedisState:
    def __init__(self, client: redis.Redis, prefix: str, topic: str) -> None:
        self.r = client
        self.prefix = prefix
        self.topic = topic
        self._dedup = client.register_script(_DEDUP_SET_GET)
        self._dedup_fallback = False  # this Redis is older than 7.0: _DEDUP

    def checkpoint_key(self, partition: int) -> str:
        return f"{self.prefix}:evaluator:ckpt:{self.topic}:{partition}"

    def delta_key(self, partition: int) -> str:
        return f"{self.checkpoint_key(partition)}:delta"

    @property
    def gaps_key(self) -> str:
        return f"{self.prefix}:evaluator:gaps"

    def check(
        self, keys: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int], ttl_s: int
    ) -> bytes:
        """One flag byte per key: NEW (now recorded with its owner ``partition:offset``),
        SAME_RECORD (recorded by this very record: a replay after a crash, to evaluate again) or
        DUPLICATE (recorded by a record at another offset: a copy, to skip).

        Keys must all have the same length (dedup_key with one prefix).
        """
        if not keys:
            return b""
        args: list[bytes | int] = [b"".join(keys), array("d", partitions).tobytes(),
                                   array("d", offsets).tobytes(), len(keys[0]), OWNER_WIDTH, max(1, ttl_s)]
        try:
            raw: Any = self._dedup(keys=[], args=args)
        except redis.ResponseError as exc:
            if self._dedup_fallback or "syntax error" not in str(exc).lower():
                raise
            self._dedup = self.r.register_script(_DEDUP)  # SET NX GET needs Redis 7.0
            self._dedup_fallback = True
            raw = self._dedup(keys=[], args=args)
        return bytes(raw)

    def load(self, partition: int) -> bytes | None:
        blob: Any = self.r.get(self.checkpoint_key(partition))
        return bytes(blob) if blob is not None else None

    def load_chain(self, partition: int) -> tuple[bytes, list[bytes]] | None:
        """The full snapshot and the deltas after it (one transaction: never half of a write)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.get(self.checkpoint_key(partition))
        pipe.lrange(self.delta_key(partition), 0, -1)
        blob, deltas = pipe.execute()
        if blob is None:
            return None
        return bytes(blob), [bytes(d) for d in deltas]

    def save(self, blobs: Iterable[tuple[int, bytes]], gaps: Sequence[dict[str, Any]] = ()) -> None:
        """Write full snapshots (and gap records) in one round trip."""
        self.save_chain(((p, True, blob) for p, blob in blobs), gaps)

    def save_chain(
        self, blobs: Iterable[tuple[int, bool, bytes]], gaps: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Write (partition, full, blob) checkpoints — a full one replaces the partition's chain, a
        delta is appended to it — and gap records, in one transaction."""
        pipe = self.r.pipeline(transaction=True)
        for partition, full, blob in blobs:
            if full:
                pipe.set(self.checkpoint_key(partition), blob)
                pipe.delete(self.delta_key(partition))
            else:
                pipe.rpush(self.delta_key(partition), blob)
        for g in gaps:
            pipe.xadd(self.gaps_key, {"gap": orjson.dumps(g)}, maxlen=100_000, approximate=True)
        pipe.execute()

    def add_gaps(self, gaps: Sequence[dict[str, Any]]) -> None:
        if gaps:
            self.save((), gaps)

    def read_gaps(self, count: int = 1000) -> list[dict[str, Any]]:
        """The newest ``count`` gap records, oldest first."""
        rows: Any = self.r.xrevrange(self.gaps_key, count=count)
        return [orjson.loads(fields[b"gap"]) for _, fields in reversed(rows)]
