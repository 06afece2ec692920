"""``alertpipe gaps --config SOURCE``: the sequence gaps the evaluator recorded, per device.

A reconciliation report: which devices lost which seq ranges (never seen within the lateness
bound), read from the pipeline's Redis. ``--json`` prints one record per line for scripts.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import redis
from rich.console import Console
from rich.table import Table

from alertpipe.workers.config.loaders.cli import add_config_argument, parse_config_arg
from alertpipe.workers.evaluator.redis_state import RedisState
from alertpipe.workers.secrets import SecretResolver, add_secrets_argument

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_secrets_argument(parser)
    parser.add_argument("--device", default=None, help="only this deviceId")
    parser.add_argument("--limit", type=int, default=10_000, help="newest N gap records to read")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    parser.add_argument("--summary", action="store_true", help="one line per device instead of per gap")


def run(args: argparse.Namespace) -> int:
    source = parse_config_arg(args.config)
    source.start()
    deadline = time.monotonic() + 30
    while source.current() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    cfg = source.current()
    source.stop()
    if cfg is None:
        print(f"no valid config from {args.config}", file=sys.stderr)
        return 2
    url = cfg.redis.url
    if url is None and cfg.redis.url_secret_ref is not None:
        url = SecretResolver(args.secrets_dir).resolve(cfg.redis.url_secret_ref).get_secret_value()
    if url is None:
        print("the config has no redis.url", file=sys.stderr)
        return 2
    state = RedisState(redis.Redis.from_url(url), cfg.redis.key_prefix, cfg.kafka.topics.events)
    gaps = [g for g in state.read_gaps(args.limit) if args.device is None or g["deviceId"] == args.device]
    if args.summary:
        per: dict[str, dict[str, int]] = {}
        for g in gaps:
            s = per.setdefault(g["deviceId"], {"gaps": 0, "missing": 0,
                                               "firstMissingSeq": g["firstMissingSeq"],
                                               "lastMissingSeq": g["lastMissingSeq"]})
            s["gaps"] += 1
            s["missing"] += g["missing"]
            s["firstMissingSeq"] = min(s["firstMissingSeq"], g["firstMissingSeq"])
            s["lastMissingSeq"] = max(s["lastMissingSeq"], g["lastMissingSeq"])
        rows = [{"deviceId": d, **s} for d, s in sorted(per.items())]
    else:
        rows = gaps
    if args.json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return 0
    table = Table(title=f"sequence gaps: {cfg.tenant}/{cfg.pipeline} ({len(gaps)} record(s))")
    cols = list(rows[0]) if rows else ["deviceId", "firstMissingSeq", "lastMissingSeq", "missing"]
    for c in cols:
        table.add_column(c)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in cols))
    Console().print(table)
    return 0
