"""The evaluator's lookup rows: Redis hashes read through a per-process LRU, one round trip per batch.

Rows live in Redis as hashes ``<prefix>:lookup:<table>:<key>`` (``lookup_store.py``; written by
``alertpipe lookup load``). Before a batch is evaluated, ``LookupCache.prefetch`` takes the
(table, key) pairs its events may read (``rules.lookups.lookup_keys``: the active rules list the
tables they read, compiled) and fetches those not cached, or cached longer than the TTL ago, in
one round trip (an HGETALL per row, in one script call: lookup_store.py). The engine then reads
rows from this cache (``row``, the ``LookupView`` it is given), never from Redis: the rule engine
stays free of I/O. The batch's rows are also kept in a plain dict, read first (no LRU bookkeeping
on the hot path).

cachetools' ``LRUCache`` bounds the size; its ``TTLCache`` does not fit: it makes an expired row
unreadable, but an event released from a reorder buffer after its own batch (it waited for a
predecessor) must still find the row that batch fetched. Here the TTL only decides what the next
batch that needs a row reads again; a row stays readable until the LRU evicts it. A read of a row
never fetched (evicted by size in between, or an event restored from a checkpoint before its rows
were prefetched) counts as ``unfetched`` and is evaluated as absent; ``prefetch_held`` fetches the
rows of a restored partition's waiting events to avoid the second case.

Redis unavailable: the RedisError propagates as the dedup round trip's does (the batch is not
evaluated, the evaluator holds and starts again from its checkpoint, backing off); no batch is
ever evaluated without its rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from cachetools import LRUCache

from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.rules.compiler import CompiledRule
from alertpipe.workers.rules.lookups import lookup_keys

__all__ = ["LookupCache", "LookupStore"]

Row = dict[str, Any]
_UNSET: Any = object()


class LookupStore(Protocol):
    """Where rows come from (``lookup_store.RedisLookupStore``): one round trip for many keys."""

    def fetch(self, keys: Sequence[tuple[str, str]]) -> list[Row | None]: ...


class LookupCache:
    """The ``LookupView`` the evaluator's engine reads, filled per batch by ``prefetch``."""

    def __init__(
        self, store: LookupStore, *, ttl_s: float, max_entries: int,
        metrics: EvaluatorMetrics | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl_s
        self.cache: LRUCache[tuple[str, str], tuple[Row | None, float]] = LRUCache(max_entries)
        self.metrics = metrics
        self.clock = clock
        self.hits = self.misses = self.unfetched = 0
        self.batch: dict[tuple[str, str], Row | None] = {}  # the rows of the last prefetch's keys
        self._rules: object = None
        self._active: tuple[CompiledRule, ...] = ()

    # --- the engine's side (LookupView) ---
    def row(self, table: str, key: str) -> Row | None:
        k = (table, key)
        row = self.batch.get(k, _UNSET)  # the current batch's rows: a plain dict, no LRU bookkeeping
        if row is not _UNSET:
            return row  # type: ignore[no-any-return]
        entry = self.cache.get(k)  # an event released from a reorder buffer after its batch
        if entry is None:
            self.unfetched += 1
            if self.metrics is not None:
                self.metrics.lookup_unfetched.inc()
            return None
        return entry[0]

    # --- the evaluator's side ---
    def active(self, rules: dict[str, CompiledRule]) -> tuple[CompiledRule, ...]:
        """The rules that read lookup tables (recomputed when the rule set is swapped)."""
        if rules is not self._rules:
            self._rules = rules
            self._active = tuple(r for r in rules.values() if r.lookups)
        return self._active

    def prefetch(self, rules: dict[str, CompiledRule], events: Iterable[dict[str, Any]]) -> int:
        """Fetch the rows these events may read that are not cached or older than the TTL, in one
        round trip; returns how many were fetched (RedisError propagates: nothing is cached then)."""
        active = self.active(rules)
        if not active:
            return 0
        wanted = lookup_keys(active, events)
        if not wanted:
            return 0
        now = self.clock()
        cache, ttl = self.cache, self.ttl
        stale = []
        batch: dict[tuple[str, str], Row | None] = {}
        for k in wanted:
            entry = cache.get(k)
            if entry is None or now - entry[1] >= ttl:
                stale.append(k)
            else:
                batch[k] = entry[0]
        hits = len(wanted) - len(stale)
        self.hits += hits
        self.misses += len(stale)
        m = self.metrics
        if m is not None:
            m.lookup_hits.inc(hits)
        if not stale:
            self.batch = batch
            return 0
        t0 = time.perf_counter()
        rows = self.store.fetch(stale)
        for k, row in zip(stale, rows, strict=True):
            cache[k] = (row, now)
            batch[k] = row
        self.batch = batch
        if m is not None:
            m.lookup_misses.inc(len(stale))
            m.lookup_fetch_seconds.observe(time.perf_counter() - t0)
            m.lookup_cached.set(len(cache))
        return len(stale)

    def configure(self, ttl_s: float, max_entries: int) -> None:
        """A new config revision's TTL and size (a smaller cache keeps the most recently used rows)."""
        self.ttl = ttl_s
        self.batch = {}
        if max_entries != self.cache.maxsize:
            old = self.cache
            self.cache = LRUCache(max_entries)
            for k, v in list(old.items())[-max_entries:]:
                self.cache[k] = v

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 1.0
