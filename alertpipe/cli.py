"""The ``alertpipe`` command: one console script, a subcommand per role and tool.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen one is imported, so ``alertpipe ingestor`` never pays for importing Kopf.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Protocol, cast

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("alertpipe.operator.cli", "run the Kubernetes operator (Kopf)"),
    "ingestor": ("alertpipe.workers.ingestor.cli", "run the HTTP ingestor"),
    "evaluator": ("alertpipe.workers.evaluator.cli", "run the rule evaluator"),
    "deliverer": ("alertpipe.workers.deliverer.cli", "run the alert deliverer"),
    "rules": ("alertpipe.workers.rules.cli", "check and test AlertRules offline"),
    "gaps": ("alertpipe.workers.evaluator.gaps_cli", "report sequence gaps per device"),
    "lookup": ("alertpipe.workers.evaluator.lookup_cli", "load, read and delete the lookup tables of rules"),
    "dlq": ("alertpipe.workers.deliverer.dlq_cli", "inspect and replay the dead-letter topic"),
    "explain": ("alertpipe.workers.deliverer.explain_cli", "print an alert's delivery history"),
    "history": ("alertpipe.workers.history.cli", "the notification history in PostgreSQL: sink, alert, why"),
    "generate": ("alertpipe.generate.cli", "send synthetic device traffic; write a ledger of the alerts due"),
    "crds": ("alertpipe.operator.crdgen", "write the CRD YAML generated from the models"),
    "devstack": ("devstack.cli", "provision and run the local stack (source checkout only)"),
}


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> Command:
    module = COMMANDS[name][0]
    if module.startswith("devstack."):
        # devstack/ is not shipped in the wheel: it is found next to this package in a checkout.
        root = Path(__file__).resolve().parents[1]
        if not (root / "devstack" / "__init__.py").exists():
            raise SystemExit("alertpipe devstack: runs from a source checkout (devstack/ not found)")
        sys.path.insert(0, str(root))
    return cast(Command, importlib.import_module(module))


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertpipe",
        description="Per-tenant real-time alert pipelines on Kafka and Redis, run by a Kubernetes operator.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Find the subcommand past the global options (``--log-level DEBUG ingestor ...``), so that only
    # its module is imported to build the parser.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser(known.command if known.command in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _apply_bind_host(args)
    return _load(args.command).run(args)


def _apply_bind_host(args: argparse.Namespace) -> None:
    """ALERTPIPE_BIND_HOST replaces a wildcard listen address (``--host``, ``--metrics-host``).

    For hosts where several pods share one network namespace (the devstack's local pod runner gives
    each pod its own loopback address this way); in a cluster it is unset and nothing changes.
    """
    bind = os.environ.get("ALERTPIPE_BIND_HOST")
    if not bind:
        return
    for attr in ("host", "metrics_host"):
        if getattr(args, attr, None) in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
            setattr(args, attr, bind)


if __name__ == "__main__":
    raise SystemExit(main())
