"""The notification history's tables in PostgreSQL: one row per decision-log entry, partitioned by day.

``alertpipe_decisions`` is range-partitioned on ``at`` (the decision's time) with one partition per
UTC day, named ``alertpipe_decisions_YYYYMMDD``; retention drops whole partitions (no DELETE, no
vacuum debt). A row's identity is where it came from on Kafka (topic, partition, offset) plus its
day, so a batch written again after a crash (at-least-once) inserts nothing twice.

The pure helpers (names, bounds, which partitions expire) are separate from the SQL so they are
unit-tested without a database. Every function runs in a transaction of its own (a savepoint inside
one the caller opened); connections are meant to be opened with ``autocommit=True``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "TABLE",
    "day_of_ms",
    "drop_expired",
    "ensure_partitions",
    "ensure_schema",
    "expired",
    "partition_day",
    "partition_name",
]

TABLE = "alertpipe_decisions"
_PARTITION = re.compile(rf"^{TABLE}_(\d{{8}})$")

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    at            timestamptz NOT NULL,
    source_topic  text        NOT NULL,
    source_part   integer     NOT NULL,
    source_offset bigint      NOT NULL,
    alert_id      text        NOT NULL,
    decision      text        NOT NULL,
    status        text        NOT NULL DEFAULT '',
    channel       text        NOT NULL DEFAULT '',
    delivery_key  text        NOT NULL DEFAULT '',
    attempt       integer     NOT NULL DEFAULT 0,
    status_code   integer,
    latency_ms    double precision,
    reason        text        NOT NULL DEFAULT '',
    delay_s       double precision,
    rule          text        NOT NULL DEFAULT '',
    pipeline      text        NOT NULL DEFAULT '',
    tenant        text        NOT NULL DEFAULT '',
    revision      text        NOT NULL DEFAULT '',
    received_at   timestamptz,
    fired_at      timestamptz,
    replayed      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (at, source_topic, source_part, source_offset)
) PARTITION BY RANGE (at);
CREATE INDEX IF NOT EXISTS {TABLE}_alert ON {TABLE} (alert_id, at);
CREATE INDEX IF NOT EXISTS {TABLE}_rule ON {TABLE} (tenant, pipeline, rule, at);
"""


def day_of_ms(ms: int) -> date:
    """The UTC day an epoch-milliseconds time falls on (its partition)."""
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def partition_name(day: date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day of a partition table's name; None for a name that is not one of ours."""
    m = _PARTITION.match(name)
    return datetime.strptime(m.group(1), "%Y%m%d").date() if m else None  # noqa: DTZ007 - a date


def expired(names: Iterable[str], today: date, retention_days: int) -> list[str]:
    """The partitions whose whole day is older than ``retention_days`` before ``today`` (kept: today and
    the ``retention_days`` days before it). Names that are not our partitions are never listed."""
    if retention_days < 1:
        raise ValueError(f"retention must be at least 1 day, not {retention_days}")
    oldest_kept = today - timedelta(days=retention_days)
    out = []
    for name in names:
        day = partition_day(name)
        if day is not None and day < oldest_kept:
            out.append(name)
    return sorted(out)


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the parent table and its indexes (idempotent)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_DDL.encode())  # several statements: psycopg runs them as one simple query


def ensure_partitions(conn: psycopg.Connection[Any], days: Iterable[date]) -> None:
    """Create the day partitions ``days`` need (idempotent)."""
    with conn.transaction(), conn.cursor() as cur:
        for day in sorted(set(days)):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(day)),
                    sql.Identifier(TABLE),
                    sql.Literal(start),
                    sql.Literal(start + timedelta(days=1)),
                )
            )


def drop_expired(
    conn: psycopg.Connection[Any], retention_days: int, today: date | None = None
) -> list[str]:
    """Drop the partitions older than the retention; returns their names."""
    today = today or datetime.now(UTC).date()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            (TABLE,),
        )
        names = [str(r[0]) for r in cur.fetchall()]
        gone = expired(names, today, retention_days)
        for name in gone:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    return gone
