"""``alertpipe generate``: the command line of the traffic generator (progress on stderr, rich)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from alertpipe.generate import (
    Knobs,
    Ledger,
    Plan,
    PlanError,
    Scenario,
    ScheduleError,
    generate,
    parse_schedule,
    percentiles,
    rule_manifests,
)

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target (one of)")
    t.add_argument("--url", help="the ingestor's POST endpoint, e.g. http://127.0.0.1:8080/v1/events")
    t.add_argument("--api-key", default="", help="Bearer key for --url")
    t.add_argument("--kafka", metavar="BOOTSTRAP", help="produce straight to Kafka (with --topic)")
    t.add_argument("--topic", help="the pipeline's events topic (with --kafka)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--pipeline", required=True, help="the AlertPipeline's name (alert ids include it)")
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--schedule", default="steady:100",
                   help="steady:RATE | step:RATE,RATE2@S | burst:RATExFACTOR@S+S | diurnal:RATE,AMP,PERIOD")
    p.add_argument("--duration", type=float, default=30.0, help="seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=500, help="events per HTTP request at most")
    p.add_argument("--linger-ms", type=float, default=5.0, help="how often due events are sent")
    p.add_argument("--ledger", default="ledger.json", help="where to write the ledger")
    p.add_argument("--print-rules", action="store_true",
                   help="print the AlertRules the ledger assumes (YAML) and exit")
    p.add_argument("--rule-label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label on the printed rules (e.g. alertpipe.io/pipeline=edge)")
    m = p.add_argument_group("value model")
    m.add_argument("--lateness-ms", type=int, default=5000, help="the pipeline's allowedLateness")
    m.add_argument("--flappers", type=float, default=0.1, help="fraction of devices that go above threshold")
    m.add_argument("--episode-every", type=float, default=15.0, help="seconds between a flapper's episodes")
    m.add_argument("--episode-len", type=float, default=3.0, help="seconds an episode lasts")
    m.add_argument("--threshold", type=float, default=80.0)
    m.add_argument("--for-ms", type=int, default=0, help="gen-hot's for")
    m.add_argument("--silent-devices", type=int, default=0, help="devices whose heartbeat stops once")
    m.add_argument("--absence-ms", type=int, default=5000, help="gen-silent's for")
    m.add_argument("--sites", type=int, default=0,
                   help="devices in this many sites, each with outages: gen-site-down (by site) fires")
    m.add_argument("--site-every", type=float, default=20.0,
                   help="event-time seconds between a site's outages")
    m.add_argument("--site-len", type=float, default=4.0, help="seconds a site's outage lasts")
    m.add_argument("--channel", action="append", default=[], help="channels the rules notify (default ops)")
    k = p.add_argument_group("edge cases")
    for name, help_text in (
        ("duplicates", "fraction of events sent twice"),
        ("reorder", "fraction held back by up to --reorder-ms"),
        ("late", "fraction held back beyond the lateness bound"), ("gaps", "fraction of seqs skipped"),
        ("hot-share", "share of events sent by the --hot-devices"),
        ("oversized", "fraction of extra oversized events (a request each)"),
        ("malformed", "fraction of extra invalid events"),
    ):
        k.add_argument(f"--{name}", type=float, default=0.0, help=help_text)
    for name, default, help_text in (
        ("reorder-ms", 0, "bound of the reordering"), ("late-delay-ms", 0, "0: lateness + skew spread + 3 s"),
        ("skew-ms", 0, "per-device clock skew bound"), ("hot-devices", 0, "how many hot devices"),
        ("dup-delay-ms", 1000, "how much later a duplicate goes"), ("oversized-bytes", 2_000_000, "size"),
    ):
        k.add_argument(f"--{name}", type=int, default=default, help=help_text)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def scenario_from(args: argparse.Namespace) -> Scenario:
    knobs = Knobs(
        duplicates=args.duplicates, dup_delay_ms=args.dup_delay_ms, reorder=args.reorder,
        reorder_ms=args.reorder_ms, late=args.late, late_delay_ms=args.late_delay_ms, gaps=args.gaps,
        skew_ms=args.skew_ms, hot_devices=args.hot_devices, hot_share=args.hot_share,
        oversized=args.oversized, oversized_bytes=args.oversized_bytes, malformed=args.malformed,
    )
    return Scenario(
        args.tenant, args.pipeline, parse_schedule(args.schedule), args.duration, devices=args.devices,
        seed=args.seed, lateness_ms=args.lateness_ms, flappers=args.flappers,
        episode_every_s=args.episode_every, episode_len_s=args.episode_len, threshold=args.threshold,
        for_ms=args.for_ms, silent_devices=args.silent_devices, absence_ms=args.absence_ms,
        sites=args.sites, site_episode_every_s=args.site_every, site_episode_len_s=args.site_len,
        channels=tuple(args.channel or ["ops"]), knobs=knobs,
    )


class _Bar:
    """Progress on stderr: sends so far, request answers, the generator's own lateness."""

    def __init__(self, total: float) -> None:
        self.progress = Progress(TextColumn("[bold]generate"), BarColumn(), TextColumn("{task.description}"),
                                 TimeRemainingColumn(), console=Console(stderr=True))
        self.task = self.progress.add_task("", total=max(1.0, total))
        self.progress.start()

    def __call__(self, ledger: Ledger, n: int, finished: bool) -> None:
        late = percentiles(ledger.lateness_ms()[-2000:])
        bad = sum(1 for r in ledger.requests if r.status != 202)
        desc = (f"{n} sent · {len(ledger.requests)} answered ({bad} not 202)"
                f" · lateness p99 {late.get('p99', 0):.0f} ms")
        self.progress.update(self.task, completed=n, description=desc)
        if finished:
            self.progress.stop()


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    try:
        scenario = scenario_from(args)
        if args.print_rules:
            labels = dict(item.split("=", 1) for item in args.rule_label)
            rules: list[Any] = rule_manifests(Plan(scenario, 0), labels)
            sys.stdout.write(yaml.safe_dump_all(rules, sort_keys=False))
            return 0
        if not args.url and not (args.kafka and args.topic):
            err.print("[red]alertpipe generate: give --url (the ingestor) or --kafka and --topic[/]")
            return 2
        bar = None if args.quiet else _Bar(scenario.schedule.expected_count(scenario.duration))
        ledger = generate(scenario, url=args.url, api_key=args.api_key, bootstrap=args.kafka,
                          topic=args.topic, batch=args.batch, linger_ms=args.linger_ms,
                          ledger_path=args.ledger, progress=bar)
    except (ScheduleError, PlanError) as exc:
        err.print(f"[red]alertpipe generate: {exc}[/]")
        return 2
    sys.stdout.write(orjson.dumps(ledger.summary(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if ledger.complete() else 1
