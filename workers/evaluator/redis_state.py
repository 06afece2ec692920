"""What the evaluator keeps in Redis: input dedup keys, partition checkpoints, gap records.

Dedup is one EVALSHA per consumed batch (not one round trip per event). Each key remembers where
the event was first seen (``partition:offset``): a copy at another offset is a duplicate, while the
same record read again after a crash (the checkpoint is older than the dedup key) is evaluated
again — otherwise a restart would skip events whose effect was lost with the process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import redis

__all__ = ["RedisState", "dedup_key"]

_DEDUP = """
local ttl = ARGV[#ARGV]
local out = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    out[i] = v
  else
    redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl)
    out[i] = false
  end
end
return out
"""


def dedup_key(prefix: str, tenant: str, device: str, seq: int) -> bytes:
    """The idempotency key of one input event: hash(tenant, deviceId, seq)."""
    digest = hashlib.blake2b(f"{tenant}\x1f{device}\x1f{seq}".encode(), digest_size=12).digest()
    return prefix.encode() + b":ev:" + digest


class RedisState:
    def __init__(self, client: redis.Redis, prefix: str, topic: str) -> None:
        self.r = client
        self.prefix = prefix
        self.topic = topic
        self._dedup = client.register_script(_DEDUP)

    def checkpoint_key(self, partition: int) -> str:
        return f"{self.prefix}:evaluator:ckpt:{self.topic}:{partition}"

    @property
    def gaps_key(self) -> str:
        return f"{self.prefix}:evaluator:gaps"

    def seen(self, keys: Sequence[bytes], owners: Sequence[bytes], ttl_s: int) -> list[bytes | None]:
        """For each key: None when new (now recorded with its owner), else the recorded owner."""
        if not keys:
            return []
        out: list[Any] = self._dedup(keys=list(keys), args=[*owners, max(1, ttl_s)])
        return [v if v else None for v in out]

    def load(self, partition: int) -> bytes | None:
        blob: Any = self.r.get(self.checkpoint_key(partition))
        return bytes(blob) if blob is not None else None

    def save(self, blobs: Iterable[tuple[int, bytes]], gaps: Sequence[dict[str, Any]] = ()) -> None:
        """Write snapshots (and gap records) in one round trip."""
        pipe = self.r.pipeline(transaction=True)
        for partition, blob in blobs:
            pipe.set(self.checkpoint_key(partition), blob)
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
