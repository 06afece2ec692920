"""``alertpipe history``: the notification history in PostgreSQL.

- ``history sink``: run the sink for one pipeline (its audit topic → PostgreSQL) until SIGTERM;
- ``history alert ID``: one alert's decisions, the table ``alertpipe explain`` prints from Kafka;
- ``history why --rule R``: per alert of a rule and channel, whether it paged, and if not, why;
- ``history prune``: drop the day partitions older than the retention now.

The database comes from ``--dsn`` or ``$ALERTPIPE_HISTORY_DSN`` (a libpq connection string or URL). It
is never printed: it may hold a password.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, KafkaException
from rich.console import Console
from rich.table import Table

from alertpipe.workers.config.groups import OFFSET_RESET, consumer_group
from alertpipe.workers.deliverer.dlq_cli import load_config
from alertpipe.workers.deliverer.explain_cli import print_entries
from alertpipe.workers.deliverer.reading import parse_time
from alertpipe.workers.errors import AlertpipeError
from alertpipe.workers.health import start_health_server
from alertpipe.workers.history.schema import drop_expired, ensure_schema
from alertpipe.workers.history.sink import HistorySink, SinkSettings
from alertpipe.workers.history.store import alert_entries, outcomes
from alertpipe.workers.secrets import add_secrets_argument

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)
DSN_ENV = "ALERTPIPE_HISTORY_DSN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", default=os.environ.get(DSN_ENV), help=f"PostgreSQL connection string (env {DSN_ENV})"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sink = sub.add_parser("sink", help="write a pipeline's decision log (audit topic) into PostgreSQL")
    sink.add_argument("--config", required=True, metavar="SOURCE", help="file:PATH or configmap:NS/NAME")
    add_secrets_argument(sink)
    sink.add_argument("--group", default=None, help="consumer group (default alertpipe.<t>.<p>.history)")
    sink.add_argument("--retention-days", type=int, default=30, help="days of history kept (whole days)")
    sink.add_argument("--batch", type=int, default=500, help="entries per transaction at most")
    sink.add_argument("--metrics-port", type=int, default=9104, help="Prometheus /metrics port (0: off)")
    sink.add_argument("--metrics-host", default="0.0.0.0", help="address /metrics listens on")  # noqa: S104
    alert = sub.add_parser("alert", help="one alert's decisions, in time order")
    alert.add_argument("alert_id")
    alert.add_argument("--json", action="store_true", help="JSON lines")
    why = sub.add_parser("why", help="was I paged for this rule? per alert and channel, the last decision")
    why.add_argument("--rule", required=True)
    why.add_argument("--pipeline")
    why.add_argument("--tenant")
    why.add_argument("--since", default="24h", help="RFC 3339 or a duration ago (default 24h)")
    why.add_argument("--until", help="RFC 3339 or a duration ago (default now)")
    why.add_argument("--json", action="store_true", help="JSON lines")
    prune = sub.add_parser("prune", help="drop the day partitions older than the retention")
    prune.add_argument("--retention-days", type=int, required=True)


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, connect_timeout=5, application_name="alertpipe-history", autocommit=True)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=args.action == "sink")
    if not args.dsn:
        console.print(f"[red]alertpipe history: no database: pass --dsn or set {DSN_ENV}[/red]")
        return 2
    try:
        if args.action == "sink":
            return _sink(args)
        with _connect(args.dsn) as conn:
            ensure_schema(conn)
            return {"alert": _alert, "why": _why, "prune": _prune}[args.action](args, conn, console)
    except psycopg.OperationalError as exc:
        console.print(f"[red]alertpipe history: cannot reach PostgreSQL: {str(exc).strip().splitlines()[0]}")
        return 2
    except (AlertpipeError, ValueError, KafkaException) as exc:
        console.print(f"[red]alertpipe history: {exc}[/red]")
        return 2


def _sink(args: argparse.Namespace) -> int:
    cfg, options = load_config(args)
    group = args.group or consumer_group(cfg.tenant, cfg.pipeline, "history")
    consumer = Consumer({
        **options, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": OFFSET_RESET,
        "client.id": f"alertpipe-history-{cfg.pipeline}",
    })  # fmt: skip
    consumer.subscribe([cfg.kafka.topics.audit])
    settings = SinkSettings(batch=args.batch, retention_days=args.retention_days)
    sink = HistorySink(consumer, lambda: _connect(args.dsn), settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sink.stop())
    if args.metrics_port:
        start_health_server(args.metrics_port, args.metrics_host)
    logger.info("history sink: %s → PostgreSQL (group %s, retention %d days)", cfg.kafka.topics.audit, group,
                args.retention_days)
    try:
        sink.run()
    finally:
        consumer.close()
    logger.info("history sink: stopped after writing %d rows", sink.written)
    return 0


def _alert(args: argparse.Namespace, conn: psycopg.Connection[Any], console: Console) -> int:
    entries = alert_entries(conn, args.alert_id)
    if not entries:
        console.print(f"no history for alert {args.alert_id}")
        return 1
    if args.json:
        for e in entries:
            print(e.to_json().decode())
    else:
        print_entries(console, args.alert_id, entries)
    return 0


def _why(args: argparse.Namespace, conn: psycopg.Connection[Any], console: Console) -> int:
    since = parse_time(args.since)
    until = parse_time(args.until) if args.until else None
    found = outcomes(
        conn, rule=args.rule, since_ms=int(since * 1000), until_ms=int(until * 1000) if until else None,
        pipeline=args.pipeline, tenant=args.tenant,
    )  # fmt: skip
    if not found:
        console.print(
            f"no alert of rule {args.rule!r} reached the deliverer since {_fmt(since * 1000)}:"
            " the rule did not fire (check it with `alertpipe rules test`,"
            " late or gapped events with `alertpipe gaps`)"
        )
        return 1
    if args.json:
        for o in found:
            print(orjson.dumps({**_as_dict(o), "paged": o.paged}).decode())
        return 0
    table = Table(title=f"rule {args.rule}: {sum(o.paged for o in found)} of {len(found)} paged")
    for col in ("fired (UTC)", "alert", "transition", "channel", "paged", "last decision", "attempts", "why"):
        table.add_column(col)
    for o in found:
        table.add_row(
            _fmt(o.fired_ms or o.at_ms), o.alert_id, o.status, o.channel,
            "yes" if o.paged else "[red]no[/red]", o.decision, str(o.attempts or "-"), o.reason or "-",
        )  # fmt: skip
    console.print(table)
    return 0


def _prune(args: argparse.Namespace, conn: psycopg.Connection[Any], console: Console) -> int:
    gone = drop_expired(conn, args.retention_days)
    console.print(f"dropped {len(gone)} day partition(s){': ' + ', '.join(gone) if gone else ''}")
    return 0


def _as_dict(o: Any) -> dict[str, Any]:
    return {k: getattr(o, k) for k in o.__slots__}


def _fmt(ms: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
