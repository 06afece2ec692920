"""Writing decision-log entries into the history tables and reading them back.

``write`` inserts a batch in one transaction (``ON CONFLICT DO NOTHING``: a batch written again
after a crash counts as duplicates, not rows). The readers answer the two questions on-call people
ask: what happened to this alert (``alert_entries``, the same rows ``alertpipe explain`` shows), and
why was — or wasn't — I paged for this rule (``outcomes``: per alert and channel, the last decision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from alertpipe.workers.deliverer.records import AuditEntry, expand_received
from alertpipe.workers.history.schema import TABLE, day_of_ms, ensure_partitions

__all__ = ["Outcome", "Source", "alert_entries", "outcomes", "write"]

_COLUMNS = (
    "at", "source_topic", "source_part", "source_offset", "alert_id", "decision", "status", "channel",
    "delivery_key", "attempt", "status_code", "latency_ms", "reason", "delay_s", "rule", "pipeline",
    "tenant", "revision", "received_at", "fired_at", "replayed",
)  # fmt: skip
_INSERT = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
    sql.Identifier(TABLE),
    sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
)
_ENTRY_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, (
    "alert_id", "decision", "at", "status", "channel", "delivery_key", "attempt", "status_code",
    "latency_ms", "reason", "delay_s", "rule", "pipeline", "tenant", "revision", "received_at", "fired_at",
    "replayed",
)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Source:
    """Where an entry was read: its identity in the history (a second write of it is a duplicate)."""

    topic: str
    partition: int
    offset: int


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else round(ts.timestamp() * 1000)


def _row(entry: AuditEntry, src: Source) -> tuple[Any, ...]:
    return (
        _ts(entry.at_ms), src.topic, src.partition, src.offset, entry.alert_id, entry.decision,
        entry.status, entry.channel, entry.delivery_key, entry.attempt, entry.status_code,
        entry.latency_ms, entry.reason, entry.delay_s, entry.rule, entry.pipeline, entry.tenant,
        entry.revision, _ts(entry.received_ms), _ts(entry.fired_ms), entry.replayed,
    )  # fmt: skip


def write(conn: psycopg.Connection[Any], batch: Sequence[tuple[AuditEntry, Source]]) -> int:
    """Insert ``batch`` in one transaction; returns how many rows were new."""
    if not batch:
        return 0
    with conn.transaction():
        ensure_partitions(conn, {day_of_ms(e.at_ms) for e, _ in batch})
        with conn.cursor() as cur:
            cur.executemany(_INSERT, [_row(e, src) for e, src in batch])  # pipelined: one round trip
            return max(cur.rowcount, 0)  # the rows inserted, summed over the batch


def _entry(r: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        alert_id=r[0], decision=r[1], at_ms=_ms(r[2]) or 0, status=r[3], channel=r[4], delivery_key=r[5],
        attempt=r[6], status_code=r[7], latency_ms=r[8], reason=r[9], delay_s=r[10], rule=r[11],
        pipeline=r[12], tenant=r[13], revision=r[14], received_ms=_ms(r[15]), fired_ms=_ms(r[16]),
        replayed=r[17],
    )  # fmt: skip


def alert_entries(conn: psycopg.Connection[Any], alert_id: str) -> list[AuditEntry]:
    """Every decision about ``alert_id``, in time order (as ``alertpipe explain`` prints them)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE alert_id = %s ORDER BY at, source_part, source_offset").format(
                _ENTRY_COLUMNS, sql.Identifier(TABLE)
            ),
            (alert_id,),
        )
        return expand_received([_entry(r) for r in cur.fetchall()])


@dataclass(frozen=True, slots=True)
class Outcome:
    """What finally happened to one alert transition on one channel."""

    alert_id: str
    status: str  # firing / resolved
    channel: str
    decision: str  # the last decision: delivered, dead_lettered, muted, ...
    at_ms: int
    attempts: int
    reason: str
    fired_ms: int | None

    @property
    def paged(self) -> bool:
        return self.decision in ("delivered", "skipped_delivered")


def outcomes(
    conn: psycopg.Connection[Any],
    *,
    rule: str,
    since_ms: int,
    until_ms: int | None = None,
    pipeline: str | None = None,
    tenant: str | None = None,
) -> list[Outcome]:
    """Per alert transition and channel of ``rule`` in [since, until): the last decision and why."""
    where = ["rule = %s", "at >= %s", "channel <> ''"]
    params: list[Any] = [rule, _ts(since_ms)]
    if until_ms is not None:
        where.append("at < %s")
        params.append(_ts(until_ms))
    if pipeline:
        where.append("pipeline = %s")
        params.append(pipeline)
    if tenant:
        where.append("tenant = %s")
        params.append(tenant)
    query = sql.SQL(
        "SELECT DISTINCT ON (alert_id, status, channel) alert_id, status, channel, decision, at, attempt,"
        " reason, fired_at FROM {} WHERE {} ORDER BY alert_id, status, channel, at DESC, source_offset DESC"
    ).format(sql.Identifier(TABLE), sql.SQL(" AND ").join(map(sql.SQL, where)))
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    out = [
        Outcome(r[0], r[1], r[2], r[3], _ms(r[4]) or 0, r[5], r[6], _ms(r[7])) for r in rows
    ]
    return sorted(out, key=lambda o: (o.fired_ms or o.at_ms, o.alert_id, o.status, o.channel))
