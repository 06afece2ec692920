"""``alertpipe explain <alert-id>``: an alert's history from the decision log (the audit topic).

When it was read, each delivery attempt per channel with status code and latency, why it was
retried (and after how long), muted, skipped as a duplicate or dead-lettered, and fallbacks.
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.config.loaders import add_config_argument
from alertpipe.workers.deliverer.dlq_cli import load_config
from alertpipe.workers.deliverer.reading import parse_time, read_topic
from alertpipe.workers.deliverer.records import AuditEntry, expand_received
from alertpipe.workers.errors import AlertpipeError
from alertpipe.workers.secrets import add_secrets_argument

__all__ = ["add_arguments", "history", "print_entries", "run"]


def history(
    config: PipelineConfig, options: dict[str, object], alert_id: str, since: float | None = None
) -> list[AuditEntry]:
    """Every decision-log entry of ``alert_id``, in time order."""
    key = alert_id.encode()
    out = []
    for msg in read_topic(dict(options), config.kafka.topics.audit, since=since):
        if msg.key() != key:
            continue
        try:
            out.append(AuditEntry.from_json(msg.value()))
        except (ValueError, TypeError):
            continue
    return expand_received(out)


def _fmt(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("alert_id", help="the alert id (as in the webhook body, or PagerDuty's dedup_key)")
    add_config_argument(parser)
    add_secrets_argument(parser)
    parser.add_argument("--since", help="read the decision log from this time on (RFC 3339 or 2h ago)")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON lines")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        cfg, options = load_config(args)
        entries = history(cfg, options, args.alert_id, parse_time(args.since) if args.since else None)
    except (AlertpipeError, ValueError, KafkaException, TimeoutError) as exc:
        console.print(f"[red]alertpipe explain: {exc}[/red]")
        return 2
    if not entries:
        console.print(f"no decision-log entries for alert {args.alert_id} in {cfg.kafka.topics.audit}")
        return 1
    if args.json:
        for e in entries:
            print(e.to_json().decode())
        return 0
    print_entries(console, args.alert_id, entries)
    return 0


def print_entries(console: Console, alert_id: str, entries: list[AuditEntry]) -> None:
    """The history table of one alert (also printed by ``alertpipe history alert`` from PostgreSQL)."""
    first = entries[0]
    console.print(
        f"alert [bold]{alert_id}[/bold]  rule {first.rule}  pipeline {first.pipeline}"
        f"  tenant {first.tenant}"
    )
    table = Table()
    for col in ("time (UTC)", "transition", "channel", "attempt", "decision", "code", "latency", "why"):
        table.add_column(col)
    for e in entries:
        why = e.reason
        if e.delay_s is not None:
            why = f"{why}; next try in {e.delay_s:g}s"
        table.add_row(
            _fmt(e.at_ms),
            e.status,
            e.channel or "-",
            str(e.attempt or "-"),
            e.decision,
            str(e.status_code or "-"),
            f"{e.latency_ms:g} ms" if e.latency_ms is not None else "-",
            why,
        )
    console.print(table)
