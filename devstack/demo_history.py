"""The demo's last step: the pipeline's decision log (its audit topic) through the history sink into
PostgreSQL, then the question `alertpipe history why` answers: was the on-call person paged, and if
not, why."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from confluent_kafka import Consumer
from rich.table import Table

from alertpipe.workers.history import HistorySink, SinkSettings, outcomes
from devstack.demo import DemoContext
from devstack.pipeline import wait_for

__all__ = ["history"]


def history(ctx: DemoContext) -> str:
    config: dict[str, Any] | None = ctx.scratch.get("pipeline")
    if config is None:
        raise RuntimeError("the Pipeline step did not run: there is no decision log to keep")
    dsn = ctx.env.get("postgres")
    topic = config["kafka"]["topics"]["audit"]
    consumer = Consumer({
        "bootstrap.servers": ctx.kafka_bootstrap, "group.id": f"alertpipe.demo.history.{time.time_ns()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })  # fmt: skip
    consumer.subscribe([topic])
    sink = HistorySink(consumer, lambda: psycopg.connect(dsn, connect_timeout=5), SinkSettings(wait_s=0.2))
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        # the demo paged 3 times (firing, resolved, the held alert): each ends in a `delivered` row
        with psycopg.connect(dsn, autocommit=True) as conn:

            def paged() -> list[Any]:
                if not sink.written:
                    return []
                found = outcomes(conn, rule="cpu-hot", pipeline=config["pipeline"], since_ms=0,
                                 tenant=config["tenant"])  # fmt: skip
                return found if sum(o.paged for o in found) >= 3 else []

            found = wait_for(paged, "the demo's pages in the history", 60)
    finally:
        sink.stop()
        thread.join(30)
        consumer.close()
    table = Table(title=f"$ alertpipe history why --rule cpu-hot --pipeline {config['pipeline']}")
    for col in ("alert", "transition", "channel", "paged", "last decision", "attempts"):
        table.add_column(col)
    for o in found:
        table.add_row(o.alert_id[:12], o.status, o.channel, "yes" if o.paged else "no", o.decision,
                      str(o.attempts or "-"))  # fmt: skip
    ctx.console.print(table)
    return (
        f"history: {sink.written} decisions of {topic} in PostgreSQL; rule cpu-hot paged"
        f" {sum(o.paged for o in found)} of {len(found)} transitions"
    )
