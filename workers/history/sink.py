"""The history sink: the audit topic (the deliverer's decision log) → PostgreSQL, at least once.

A batch is read, written in one transaction, and only then are its offsets committed; a crash between
the two writes the batch again, and the table's key (topic, partition, offset) makes that a no-op. A
record that is not a decision-log entry is counted and skipped with one log line (the audit topic is
written only by the deliverer; such a record is a bug, not data). When PostgreSQL is down the sink
holds: it keeps the batch, retries with backoff and commits nothing, so Kafka keeps the entries.
Old days are dropped by retention once an hour (and at start).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psycopg
from prometheus_client import Counter, Gauge

from alertpipe.workers.deliverer.records import AuditEntry
from alertpipe.workers.history.schema import drop_expired, ensure_schema
from alertpipe.workers.history.store import Source, write

__all__ = ["HistorySink", "SinkConsumer", "SinkSettings"]

logger = logging.getLogger(__name__)

ROWS = Counter("alertpipe_history_rows", "Decision-log entries read by the history sink", ["result"])
WRITE_ERRORS = Counter("alertpipe_history_write_errors", "Batches the history sink failed to write (retried)")
LAST_WRITE = Gauge("alertpipe_history_last_write_timestamp_seconds", "When the sink last committed a batch")
DROPPED_DAYS = Counter("alertpipe_history_partitions_dropped", "Day partitions dropped by retention")


class SinkConsumer(Protocol):
    """The part of a confluent_kafka.Consumer the sink uses."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...

    def commit(self, *, asynchronous: Literal[False]) -> Any: ...


@dataclass(frozen=True, slots=True)
class SinkSettings:
    batch: int = 500  # entries per transaction at most
    wait_s: float = 0.5  # how long a read waits for the first entry
    retention_days: int = 30
    retention_every_s: float = 3600.0
    max_backoff_s: float = 30.0  # between retries while PostgreSQL is down


class HistorySink:
    def __init__(
        self,
        consumer: SinkConsumer,
        connect: Callable[[], psycopg.Connection[Any]],
        settings: SinkSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.connect = connect
        self.settings = settings or SinkSettings()
        self.clock = clock
        self.stopping = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._next_retention = 0.0
        self.written = 0  # rows inserted since start (tests and the CLI's summary read it)
        self.duplicates = 0  # entries read that were in the history already (a batch written again)

    def stop(self) -> None:
        self.stopping.set()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
            self._conn.autocommit = True  # each write is its own transaction block, committed at its end
            ensure_schema(self._conn)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def parse(self, messages: list[Any]) -> list[tuple[AuditEntry, Source]]:
        batch = []
        for m in messages:
            if m.error() is not None:
                logger.warning("history sink: Kafka reports %s", m.error())
                continue
            try:
                entry = AuditEntry.from_json(m.value())
            except (ValueError, TypeError) as exc:
                ROWS.labels("invalid").inc()
                logger.warning(
                    "history sink: skipped %s[%s]@%s: not a decision-log entry (%s)",
                    m.topic(), m.partition(), m.offset(), exc,
                )
                continue
            batch.append((entry, Source(m.topic(), m.partition(), m.offset())))
        return batch

    def store(self, batch: list[tuple[AuditEntry, Source]]) -> int:
        """Write ``batch`` until it is written (or the sink stops): returns the rows inserted."""
        backoff = 0.2
        while not self.stopping.is_set():
            try:
                conn = self._connection()
                self._retention(conn)
                inserted = write(conn, batch)
            except psycopg.Error as exc:
                WRITE_ERRORS.inc()
                self._drop_connection()
                logger.warning("history sink: PostgreSQL write failed, retrying in %.1fs: %s", backoff,
                               str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                self.stopping.wait(backoff * (0.5 + random.random()))  # noqa: S311 - jitter
                backoff = min(backoff * 2, self.settings.max_backoff_s)
                continue
            ROWS.labels("inserted").inc(inserted)
            ROWS.labels("duplicate").inc(len(batch) - inserted)
            self.written += inserted
            self.duplicates += len(batch) - inserted
            return inserted
        raise InterruptedError("stopped before the batch was written")

    def _retention(self, conn: psycopg.Connection[Any]) -> None:
        now = self.clock()
        if now < self._next_retention:
            return
        gone = drop_expired(conn, self.settings.retention_days)
        if gone:
            DROPPED_DAYS.inc(len(gone))
            logger.info("history sink: retention (%d days) dropped %s", self.settings.retention_days,
                        ", ".join(gone))
        self._next_retention = now + self.settings.retention_every_s

    def step(self) -> int:
        """One batch: read, write, commit. Returns the messages read."""
        messages = self.consumer.consume(self.settings.batch, self.settings.wait_s)
        if not messages:
            return 0
        batch = self.parse(messages)
        try:
            self.store(batch)
        except InterruptedError:
            return len(messages)  # not committed: read again by the next sink
        self.consumer.commit(asynchronous=False)
        LAST_WRITE.set_to_current_time()
        return len(messages)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.step()
        self._drop_connection()
