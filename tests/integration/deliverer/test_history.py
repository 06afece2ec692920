"""The notification history: a real deliverer's decision log (real Kafka) written by the history sink
into a real PostgreSQL, once per entry across a database crash and a second reader, and the questions
it answers (``alertpipe history why``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from alertpipe.workers.deliverer.reading import read_topic
from alertpipe.workers.deliverer.records import AuditEntry
from alertpipe.workers.history import HistorySink, SinkSettings, alert_entries, outcomes
from alertpipe.workers.history.schema import TABLE, drop_expired, ensure_partitions, ensure_schema
from devstack.pipeline import wait_for
from devstack.postgres import PostgresServer
from tests.integration.deliverer.conftest import ROOT, Pipeline, make_alert, running_deliverer, webhook
from tests.receivers import HttpReceiver, Reply, wait_until

pytestmark = pytest.mark.integration
TERMINAL = {"delivered", "dead_lettered", "muted"}


@contextmanager
def sink_thread(pipeline: Pipeline, dsn: str, group: str) -> Iterator[HistorySink]:
    """A HistorySink on the pipeline's audit topic (consumer group ``group``) in a thread."""
    consumer = Consumer({
        "bootstrap.servers": pipeline.bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })  # fmt: skip
    consumer.subscribe([pipeline.config.kafka.topics.audit])
    sink = HistorySink(consumer, lambda: psycopg.connect(dsn, connect_timeout=3, autocommit=True),
                       SinkSettings(wait_s=0.2, max_backoff_s=1.0))  # fmt: skip
    t = threading.Thread(target=sink.run, daemon=True)
    t.start()
    try:
        yield sink
    finally:
        sink.stop()
        t.join(30)
        consumer.close()


def rows(dsn: str, pipeline: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT source_part, source_offset, alert_id, decision, channel FROM {TABLE}"  # noqa: S608
            " WHERE pipeline = %s ORDER BY source_part, source_offset",
            (pipeline,),
        ).fetchall()


def on_topic(pipeline: Pipeline) -> int:
    """How many records the audit topic holds (raw: a `received` row is folded into its first attempt)."""
    options = {"bootstrap.servers": pipeline.bootstrap}
    return sum(1 for _ in read_topic(options, pipeline.config.kafka.topics.audit))


async def settled(pipeline: Pipeline, terminal: int) -> list[AuditEntry]:
    """The decision log once ``terminal`` (alert, channel) deliveries reached a terminal decision."""
    audit: list[AuditEntry] = []

    def done() -> bool:
        nonlocal audit
        return sum(e.decision in TERMINAL for e in audit) >= terminal

    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"only {sum(e.decision in TERMINAL for e in audit)} terminal"
        audit = await asyncio.to_thread(pipeline.audit)
        await asyncio.sleep(0.2)
    return audit


async def test_the_decision_log_lands_once_and_says_who_was_paged_and_why_not(
    pipeline: Pipeline, receiver: HttpReceiver, postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    receiver.set_default("/webhook/broken", Reply(500))
    pipeline.update(
        channels=[
            webhook("ok", receiver.url("/webhook/ok")),
            webhook("broken", receiver.url("/webhook/broken"),
                    retry={"maxAttempts": 2, "maxAge": "5s", "initialBackoff": "20ms", "maxBackoff": "50ms"}),
            webhook("noisy", receiver.url("/webhook/noisy")),
        ],
        killSwitches={"mutedChannels": [{"name": "noisy", "reason": "too loud"}]},
    )  # fmt: skip
    name = pipeline.config.pipeline
    alerts = [make_alert(n, ["ok", "broken", "noisy"], pipeline=name) for n in range(6)]
    async with running_deliverer(pipeline):
        pipeline.produce(alerts[:3])
        await settled(pipeline, 9)
        with sink_thread(pipeline, postgres_dsn, f"history-{name}") as sink:
            await wait_until(lambda: sink.written >= 9, 30, "the first entries in PostgreSQL")
            await asyncio.to_thread(postgres_server.restart, crash=True)  # the sink holds: nothing is lost
            pipeline.produce(alerts[3:])
            audit = await settled(pipeline, 18)
            total = await asyncio.to_thread(on_topic, pipeline)
            await wait_until(lambda: sink.written >= total, 60, "every entry after the crash")
    got = rows(postgres_dsn, name)
    assert len(got) == len({(p, o) for p, o, *_ in got}) == total  # each entry once

    # a second sink (a new consumer group) reads it all again: only duplicates, no new row
    with sink_thread(pipeline, postgres_dsn, f"history-again-{name}") as again:
        wait_for(lambda: again.duplicates >= total, "the second sink to read the whole topic", 30)
        assert again.written == 0
    assert len(rows(postgres_dsn, name)) == total

    with psycopg.connect(postgres_dsn) as conn:
        first = alerts[0].id
        from_pg = [(e.decision, e.channel, e.attempt) for e in alert_entries(conn, first)]
        assert from_pg == [(e.decision, e.channel, e.attempt) for e in audit if e.alert_id == first]
        found = outcomes(conn, rule="cpu-high", pipeline=name, since_ms=0)
    by_channel: dict[str, set[tuple[str, bool]]] = {}
    for o in found:
        by_channel.setdefault(o.channel, set()).add((o.decision, o.paged))
    assert by_channel == {
        "ok": {("delivered", True)},
        "broken": {("dead_lettered", False)},
        "noisy": {("muted", False)},
    }
    assert {o.alert_id for o in found} == {a.id for a in alerts}
    assert all("too loud" in o.reason for o in found if o.channel == "noisy")

    env = {**os.environ, "ALERTPIPE_HISTORY_DSN": postgres_dsn, "COLUMNS": "250"}
    why = _cli(env, "why", "--rule", "cpu-high", "--pipeline", name, "--since", "1d")
    assert why.returncode == 0, why.stderr
    assert "6 of 18 paged" in why.stdout and "dead_lettered" in why.stdout and "too loud" in why.stdout
    never = _cli(env, "why", "--rule", "no-such-rule", "--since", "1d")
    assert never.returncode == 1 and "did not fire" in never.stdout
    one = _cli(env, "alert", first, "--json")
    assert one.returncode == 0 and [AuditEntry.from_json(line.encode()).decision for line in
                                    one.stdout.splitlines()] == [d for d, _, _ in from_pg]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alertpipe", "history", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60, check=False)  # fmt: skip


def test_retention_drops_whole_old_days_and_keeps_the_rest(postgres_dsn: str) -> None:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in (0, 1, 29, 30, 31, 45)]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        ensure_schema(conn)
        ensure_partitions(conn, days)
        gone = drop_expired(conn, 30, today)
        left = {
            str(r[0]) for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (TABLE,)
            ).fetchall()
        }  # fmt: skip
    old = {f"{TABLE}_{d:%Y%m%d}" for d in days if d < today - timedelta(days=30)}
    assert set(gone) == old and len(old) == 2
    assert not old & left and {f"{TABLE}_{d:%Y%m%d}" for d in days} - old <= left


def test_a_record_that_is_not_a_decision_is_skipped_and_the_sink_goes_on(
    pipeline: Pipeline, postgres_dsn: str
) -> None:
    topic = pipeline.config.kafka.topics.audit
    p = Producer({"bootstrap.servers": pipeline.bootstrap})
    p.produce(topic, key=b"x", value=b"{not json")
    good = AuditEntry(alert_id="a-1", decision="delivered", at_ms=int(time.time() * 1000), channel="ok",
                      rule="r", pipeline=pipeline.config.pipeline)  # fmt: skip
    p.produce(topic, key=b"a-1", value=good.to_json())
    assert p.flush(30) == 0
    with sink_thread(pipeline, postgres_dsn, f"history-bad-{pipeline.config.pipeline}") as sink:
        wait_for(lambda: sink.written == 1, "the good entry written", 30)
    assert [r[2:] for r in rows(postgres_dsn, pipeline.config.pipeline)] == [("a-1", "delivered", "ok")]
