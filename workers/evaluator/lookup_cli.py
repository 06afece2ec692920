"""``alertpipe lookup load|get|delete --config SOURCE --table NAME ...``: the lookup tables rules read.

``load FILE.csv|FILE.json`` writes one row per record into the pipeline's Redis (each replaces
the row of its key; ``--replace`` also deletes the table's rows the file does not have). A CSV's
key is its first column unless ``--key`` names another; its other cells become typed fields
(``80``, ``80.5``, ``true`` → numbers and booleans; an empty cell is no field). A JSON file is an
object ``{key: {field: value}}`` or a list of objects with the key in ``--key`` (default ``key``).
Evaluators see a change within the pipeline's ``spec.lookups.ttl``.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import redis

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.config.loaders.cli import add_config_argument, parse_config_arg
from alertpipe.workers.evaluator.lookup_store import RedisLookupStore
from alertpipe.workers.rules.lookups import TABLE_NAME
from alertpipe.workers.secrets import SecretResolver, add_secrets_argument

__all__ = ["LookupFileError", "add_arguments", "read_rows", "run"]

MAX_KEY_CHARS = 512
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?$")

Rows = list[tuple[str, dict[str, Any]]]


class LookupFileError(ValueError):
    """A file that cannot be loaded; the message names the record."""


def cell(text: str) -> Any:
    """A CSV cell's value: an int, a float, a bool or the text itself."""
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return text


def _check_key(key: Any, where: str) -> str:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise LookupFileError(f"{where}: the key must be a string or an int, not {type(key).__name__}")
    k = str(key)
    if not k or len(k) > MAX_KEY_CHARS:
        raise LookupFileError(f"{where}: the key must have 1..{MAX_KEY_CHARS} characters")
    return k


def read_csv(text: str, key: str | None) -> Rows:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    if not header:
        raise LookupFileError("the CSV file has no header row")
    key = key or header[0]
    if key not in header:
        raise LookupFileError(f"the CSV header has no column {key!r} (columns: {', '.join(header)})")
    out = []
    for i, rec in enumerate(reader, start=2):
        if None in rec:
            raise LookupFileError(f"line {i}: more cells than the header has columns")
        k = _check_key(rec.get(key) or "", f"line {i}")
        out.append((k, {c: cell(v) for c, v in rec.items() if c != key and v is not None and v != ""}))
    return out


def read_json(text: str, key: str | None) -> Rows:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LookupFileError(f"not JSON: {exc}") from None
    out = []
    if isinstance(doc, dict):
        for k, row in doc.items():
            if not isinstance(row, dict):
                raise LookupFileError(f"{k!r}: a row must be an object of fields")
            out.append((_check_key(k, repr(k)), row))
        return out
    if not isinstance(doc, list):
        raise LookupFileError("a JSON file is an object {key: {field: value}} or a list of objects")
    key = key or "key"
    for i, row in enumerate(doc):
        if not isinstance(row, dict) or key not in row:
            raise LookupFileError(f"[{i}]: an object with the key field {key!r}")
        out.append((_check_key(row[key], f"[{i}]"), {f: v for f, v in row.items() if f != key}))
    return out


def read_rows(path: Path, key: str | None = None) -> Rows:
    """The rows of a .csv or .json file; LookupFileError names the bad record."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = read_csv(text, key)
    elif path.suffix.lower() == ".json":
        rows = read_json(text, key)
    else:
        raise LookupFileError(f"{path.name}: a .csv or .json file")
    seen: set[str] = set()
    for k, _row in rows:
        if k in seen:
            raise LookupFileError(f"key {k!r} appears twice")
        seen.add(k)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = sub.add_parser("load", help="write the rows of a CSV or JSON file")
    get = sub.add_parser("get", help="print rows as JSON, one per line")
    delete = sub.add_parser("delete", help="delete rows (or --all)")
    for p in (load, get, delete):
        add_config_argument(p)
        add_secrets_argument(p)
        p.add_argument("--table", required=True, help="the table's name, as rules write lookup('NAME', ...)")
    load.add_argument("file", type=Path, help="FILE.csv or FILE.json")
    load.add_argument("--key", default=None, help="the key column (CSV: default the first; JSON list: key)")
    load.add_argument("--replace", action="store_true", help="also delete the table's rows not in the file")
    get.add_argument("keys", nargs="*", help="row keys (none: every row)")
    delete.add_argument("keys", nargs="*", help="row keys")
    delete.add_argument("--all", action="store_true", help="delete every row of the table")


def _config(source_arg: str) -> PipelineConfig | None:
    source = parse_config_arg(source_arg)
    source.start()
    deadline = time.monotonic() + 30
    while source.current() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    cfg = source.current()
    source.stop()
    return cfg


def _store(args: argparse.Namespace) -> RedisLookupStore | None:
    cfg = _config(args.config)
    if cfg is None:
        print(f"no valid config from {args.config}", file=sys.stderr)
        return None
    url = cfg.redis.url
    if url is None and cfg.redis.url_secret_ref is not None:
        url = SecretResolver(args.secrets_dir).resolve(cfg.redis.url_secret_ref).get_secret_value()
    if url is None:
        print("the config has no redis.url", file=sys.stderr)
        return None
    return RedisLookupStore(redis.Redis.from_url(url), cfg.redis.lookups_prefix)


def run(args: argparse.Namespace) -> int:
    if not TABLE_NAME.match(args.table):
        print(f"--table {args.table!r}: letters, digits, '_', '-', '.', at most 63", file=sys.stderr)
        return 2
    rows: Rows = []
    if args.action == "load":
        try:
            rows = read_rows(args.file, args.key)
        except (LookupFileError, OSError, UnicodeDecodeError) as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2
    elif args.action == "delete" and not args.keys and not args.all:
        print("delete: name row keys or --all", file=sys.stderr)
        return 2
    store = _store(args)
    if store is None:
        return 2
    try:
        return _act(store, args, rows)
    except redis.RedisError as exc:
        print(f"Redis: {exc}", file=sys.stderr)
        return 1


def _act(store: RedisLookupStore, args: argparse.Namespace, rows: Rows) -> int:
    table = args.table
    if args.action == "load":
        n = store.put(table, rows)
        gone = 0
        if args.replace:
            keep = {k for k, _ in rows}
            gone = store.delete(table, [k for k in store.keys(table) if k not in keep])
        print(f"table {table}: {n} row(s) written, {gone} deleted")
        return 0
    if args.action == "get":
        keys: Iterable[str] = args.keys or sorted(store.keys(table))
        missing = 0
        for k in keys:
            row = store.get(table, k)
            if row is None:
                missing += 1
                print(f"{k}: no such row", file=sys.stderr)
                continue
            sys.stdout.write(orjson.dumps({"key": k, "row": row}).decode() + "\n")
        return 1 if missing else 0
    keys = list(store.keys(table)) if args.all else args.keys
    print(f"table {table}: {store.delete(table, keys)} row(s) deleted")
    return 0
