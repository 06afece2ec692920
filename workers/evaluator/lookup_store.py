"""Lookup tables in Redis: one hash per row, ``<prefix>:lookup:<table>:<key>``, a JSON value per field.

The prefix is the pipeline's (``RedisSettings.lookups_prefix``: its key prefix, kept by a canary
track), so two pipelines — two tenants — never read each other's rows. Field values are JSON text,
so a row keeps its types (``{"max": 80.5, "site": "berlin", "muted": true}``): the evaluator reads
them back with orjson. ``alertpipe lookup load`` writes rows (lookup_cli.py); the evaluator's
``LookupCache`` reads them in one round trip per batch (``fetch``: one script call).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import redis

__all__ = ["RedisLookupStore", "decode_row", "encode_row"]

_GLOB = re.compile(r"([*?\[\]\\])")


def encode_row(row: Mapping[str, Any]) -> dict[str, bytes]:
    """A row as hash fields: field name → JSON text of the value."""
    return {str(k): orjson.dumps(v) for k, v in row.items()}


def decode_row(raw: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """A hash as a row (None when there is no such hash); a field that is not JSON is a string."""
    if not raw:
        return None
    out: dict[str, Any] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        try:
            out[name] = orjson.loads(v)
        except orjson.JSONDecodeError:
            out[name] = v.decode(errors="replace") if isinstance(v, bytes) else v
    return out


# HGETALL of every key, the replies as one JSON array of flat [field, value, ...] arrays (an empty
# hash: ``{}``, cjson's empty table). One reply to parse: a pipeline of 2,500 HGETALLs cost ~18 µs
# per row in redis-py's reply parsing on this machine, this ~4-7 (bench/evaluator/bench_lookup.py).
_FETCH = """
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGETALL', k) end
return cjson.encode(out)
"""


def _row(flat: Any) -> dict[str, Any] | None:
    if not flat:
        return None
    out: dict[str, Any] = {}
    for i in range(0, len(flat) - 1, 2):
        try:
            out[flat[i]] = orjson.loads(flat[i + 1])
        except orjson.JSONDecodeError:
            out[flat[i]] = flat[i + 1]
    return out


class RedisLookupStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix
        self._fetch = client.register_script(_FETCH)

    def key(self, table: str, key: str) -> str:
        return f"{self.prefix}:lookup:{table}:{key}"

    def fetch(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
        """The rows of (table, key) pairs, in one round trip: a script's HGETALL per key, all the
        replies as one JSON document."""
        if not keys:
            return []
        raw: Any = self._fetch(keys=[self.key(t, k) for t, k in keys])
        return [_row(flat) for flat in orjson.loads(raw)]

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        return decode_row(self.r.hgetall(self.key(table, key)))  # type: ignore[arg-type]

    def put(self, table: str, rows: Iterable[tuple[str, Mapping[str, Any]]], *, chunk: int = 1000) -> int:
        """Write rows; each replaces the row of its key (delete + write in one transaction per chunk)."""
        n = 0
        pipe = self.r.pipeline(transaction=True)
        for key, row in rows:
            pipe.delete(self.key(table, key))
            fields = encode_row(row)
            if fields:
                pipe.hset(self.key(table, key), mapping=fields)  # type: ignore[arg-type]
            n += 1
            if n % chunk == 0:
                pipe.execute()
        pipe.execute()
        return n

    def keys(self, table: str) -> Iterator[str]:
        """Every row key of a table (SCAN, so Redis is never blocked)."""
        head = self.key(table, "")
        pattern = _GLOB.sub(r"\\\1", head) + "*"
        for raw in self.r.scan_iter(match=pattern, count=1000):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            yield name[len(head):]

    def delete(self, table: str, keys: Iterable[str]) -> int:
        n = 0
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.delete(self.key(table, key))
            n += 1
        return sum(int(x) for x in pipe.execute()) if n else 0
