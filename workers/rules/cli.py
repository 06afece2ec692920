"""``alertpipe rules check|test FILES``: compile AlertRules and run their offline tests, no cluster.

``check`` prints every error as ``FILE: RULE: path: reason``; ``test`` also runs ``spec.tests``
(like ``promtool test rules``). Exit status 0 when everything passes, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from alertpipe.workers.config import parse_duration
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.rules.compiler import compile_rule, rule_from_manifest
from alertpipe.workers.rules.testing import run_rule_test

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check", "test"], help="check: compile only; test: run spec.tests")
    parser.add_argument("files", nargs="+", type=Path,
                        help="YAML files (or folders) with AlertRule documents")
    parser.add_argument("--channels", default=None,
                        help="comma-separated channel names the pipeline defines (checks spec.channels)")
    parser.add_argument("--tables", default=None,
                        help="comma-separated lookup tables the pipeline declares (checks lookup() calls)")
    parser.add_argument("--lateness", default="5s", help="allowed lateness for tests (default 5s)")


def _files(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml"))
        else:
            yield p


def _docs(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open() as fh:
        for i, doc in enumerate(yaml.safe_load_all(fh)):
            if doc is None:
                continue
            if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                for j, item in enumerate(doc["items"]):
                    yield i * 1000 + j, item
            else:
                yield i, doc


def run(args: argparse.Namespace) -> int:
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    lateness_ms = round(parse_duration(args.lateness) * 1000)
    failed = 0
    rules = tests = 0
    out = sys.stdout
    for path in _files(args.files):
        try:
            docs = list(_docs(path))
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {str(exc).splitlines()[0]}", file=out)
            failed += 1
            continue
        except RecursionError:  # PyYAML's composer recurses once per level of nesting
            print(f"{path}: cannot read: nested too deeply (a rule needs a few levels, not hundreds)",
                  file=out)
            failed += 1
            continue
        for _, doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") not in (None, "AlertRule"):
                continue
            meta = doc.get("metadata")
            label = meta.get("name", "?") if isinstance(meta, dict) else "?"
            try:
                name, spec = rule_from_manifest(doc)
                rule = compile_rule(name, spec, channels=channels, tables=tables)
            except RuleCompileError as exc:
                failed += 1
                for p, reason in exc.errors:
                    print(f"{path}: {label}: {p}: {reason}", file=out)
                continue
            rules += 1
            if args.action == "check":
                reads = f", lookup tables: {', '.join(sorted(rule.tables))}" if rule.tables else ""
                print(f"{path}: {name}: ok ({rule.kind}{reads})", file=out)
                continue
            for test in spec.tests:
                tests += 1
                res = run_rule_test(rule, test, lateness_ms)
                status = "PASS" if res.ok else "FAIL"
                print(f"{status} {path}: {name}: {test.name}: {res.message}", file=out)
                failed += 0 if res.ok else 1
    summary = f"{rules} rule(s) compiled" + (f", {tests} test(s) run" if args.action == "test" else "")
    print(f"{summary}, {failed} failure(s)", file=out)
    return 1 if failed else 0
