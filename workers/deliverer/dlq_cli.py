"""``alertpipe dlq list|replay``: inspect dead-lettered deliveries and send them back.

Replay produces each selected alert back to the alerts topic, narrowed to the one channel that gave
up and marked with header ``alertpipe-replayed-at-ms``: the deliverer then ignores the earlier
dead-letter mark and counts the retry budget's age from the replay. A delivery that did get through
meanwhile is skipped by its delivered mark, so replaying twice sends once.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import orjson
from confluent_kafka import KafkaException, Producer
from rich.console import Console
from rich.table import Table

from alertpipe.workers.config import PipelineConfig, SecretKeyRef
from alertpipe.workers.config.loaders import add_config_argument, parse_config_arg
from alertpipe.workers.deliverer.kafka_io import client_options
from alertpipe.workers.deliverer.reading import parse_time, read_topic
from alertpipe.workers.deliverer.records import REPLAY_HEADER, DeadLetter, dead_letter_from_json
from alertpipe.workers.errors import AlertpipeError
from alertpipe.workers.secrets import SecretResolver, add_secrets_argument

__all__ = ["DlqFilter", "add_arguments", "load_config", "run", "select_dead_letters"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DlqFilter:
    pipeline: str | None = None
    channel: str | None = None
    since: float | None = None  # epoch seconds, on dead_at
    until: float | None = None
    alert_id: str | None = None

    def match(self, dl: DeadLetter) -> bool:
        if not dl.channel:  # an unreadable message from the alerts topic: nothing to replay
            return False
        if self.pipeline and dl.pipeline != self.pipeline:
            return False
        if self.channel and dl.channel != self.channel:
            return False
        if self.since is not None and dl.dead_at_ms < self.since * 1000:
            return False
        if self.until is not None and dl.dead_at_ms > self.until * 1000:
            return False
        return not (self.alert_id and dl.alert.get("id") != self.alert_id)


def select_dead_letters(
    config: PipelineConfig, options: dict[str, object], flt: DlqFilter
) -> list[DeadLetter]:
    """Delivery dead letters of the pipeline's topic matching ``flt`` (latest per delivery key)."""
    latest: dict[str, DeadLetter] = {}
    for msg in read_topic(dict(options), config.kafka.topics.dead_letter, since=flt.since):
        dl = dead_letter_from_json(msg.value() or b"")
        if dl is not None and flt.match(dl):
            latest[dl.delivery_key] = dl
    return sorted(latest.values(), key=lambda d: d.dead_at_ms)


def replay(config: PipelineConfig, options: dict[str, object], letters: list[DeadLetter]) -> int:
    producer = Producer({**options, "enable.idempotence": True, "acks": "all"})
    errors: list[str] = []

    def ack(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    now_ms = str(int(time.time() * 1000)).encode()
    for dl in letters:
        alert = dl.to_alert().model_copy(update={"channels": [dl.channel]})
        producer.produce(
            config.kafka.topics.alerts,
            key=alert.id,
            value=alert.to_json(),
            headers=[(REPLAY_HEADER, now_ms)],
            on_delivery=ack,
        )
        producer.poll(0)
    left = producer.flush(30)
    if left or errors:
        raise KafkaException(f"{left} replays unacknowledged, {len(errors)} failed: {errors[:1]}")
    return len(letters)


def load_config(args: argparse.Namespace) -> tuple[PipelineConfig, dict[str, object]]:
    source = parse_config_arg(args.config)
    source.start()
    deadline = time.monotonic() + 15
    while (cfg := source.current()) is None:
        if time.monotonic() > deadline:
            source.stop()
            raise AlertpipeError(f"no valid PipelineConfig at {args.config}")
        time.sleep(0.1)
    source.stop()
    resolver = SecretResolver(args.secrets_dir)

    def secret(ref: SecretKeyRef) -> str:
        return resolver.resolve(ref).get_secret_value()

    return cfg, client_options(cfg, secret)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "replay"], help="list dead letters, or send them back")
    add_config_argument(parser)
    add_secrets_argument(parser)
    parser.add_argument("--pipeline", help="only this pipeline")
    parser.add_argument("--channel", help="only this channel")
    parser.add_argument("--alert-id", help="only this alert")
    parser.add_argument("--since", help="dead-lettered at or after: RFC 3339 or a duration ago (2h)")
    parser.add_argument("--until", help="dead-lettered at or before: RFC 3339 or a duration ago")
    parser.add_argument("--dry-run", action="store_true", help="replay: show what would be sent")
    parser.add_argument("--json", action="store_true", help="list: one JSON object per line")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        flt = DlqFilter(
            pipeline=args.pipeline,
            channel=args.channel,
            alert_id=args.alert_id,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
        )
        cfg, options = load_config(args)
        letters = select_dead_letters(cfg, options, flt)
    except (AlertpipeError, ValueError, KafkaException, TimeoutError) as exc:
        console.print(f"[red]alertpipe dlq: {exc}[/red]")
        return 2
    if args.action == "list" or args.dry_run:
        if args.json:
            for dl in letters:
                print(orjson.dumps(_as_dict(dl)).decode())
        else:
            table = Table(title=f"{len(letters)} dead-lettered deliveries in {cfg.kafka.topics.dead_letter}")
            for col in ("dead at (UTC)", "alert", "status", "channel", "attempts", "last", "reason"):
                table.add_column(col)
            for dl in letters:
                table.add_row(
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(dl.dead_at_ms / 1000)),
                    str(dl.alert.get("id", ""))[:12],
                    str(dl.alert.get("status", "")),
                    dl.channel,
                    str(dl.attempts),
                    str(dl.last_status or "-"),
                    dl.reason[:80],
                )
            console.print(table)
        return 0
    try:
        n = replay(cfg, options, letters)
    except KafkaException as exc:
        console.print(f"[red]alertpipe dlq replay: {exc}[/red]")
        return 1
    console.print(f"replayed {n} deliveries to {cfg.kafka.topics.alerts}")
    return 0


def _as_dict(dl: DeadLetter) -> dict[str, object]:
    return {f: getattr(dl, f) for f in DeadLetter.__dataclass_fields__}
