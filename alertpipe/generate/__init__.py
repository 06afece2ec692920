"""``alertpipe generate``: synthetic device traffic with a ledger of the alerts it must raise.

A Scenario (devices, a rate schedule, a value model, edge-case Knobs) becomes a Plan; a sender
keeps its schedule open loop, to the ingestor over HTTP or straight to the events topic; the
Ledger says what was sent, how late the generator itself was, and which alerts a correct pipeline
raises (ids, event times, when they were due). Not used by the workers: a tool and a test fixture.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from alertpipe.generate.ledger import Ledger, RequestRecord, percentiles
from alertpipe.generate.plan import (
    HOT_RULE,
    SILENT_RULE,
    SITE_RULE,
    Expected,
    Knobs,
    Plan,
    PlanError,
    Scenario,
    Send,
)
from alertpipe.generate.schedules import Schedule, ScheduleError, due_times, parse_schedule
from alertpipe.generate.send import Progress, run_http, run_kafka

__all__ = [
    "HOT_RULE",
    "SILENT_RULE",
    "SITE_RULE",
    "Expected",
    "Knobs",
    "Ledger",
    "Plan",
    "PlanError",
    "Progress",
    "RequestRecord",
    "Scenario",
    "Schedule",
    "ScheduleError",
    "Send",
    "due_times",
    "generate",
    "parse_schedule",
    "percentiles",
    "rule_manifests",
    "run_http",
    "run_kafka",
]


def rule_manifests(plan: Plan, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The plan's rules as AlertRule objects, ready for ``kubectl apply`` (or the Kubernetes API)."""
    return [
        {"apiVersion": "alertpipe.io/v1alpha1", "kind": "AlertRule",
         "metadata": {"name": r["name"], "labels": dict(labels or {})}, "spec": r["spec"]}
        for r in plan.rules()
    ]


def generate(
    scenario: Scenario,
    *,
    url: str | None = None,
    api_key: str = "",
    bootstrap: str | None = None,
    topic: str | None = None,
    batch: int = 500,
    linger_ms: float = 5.0,
    start_in: float = 0.2,
    ledger_path: str | Path | None = None,
    progress: Progress | None = None,
    retry_for: float = 0.0,
) -> Ledger:
    """Run ``scenario`` against the ingestor at ``url`` (…/v1/events) or the Kafka ``topic`` and
    return (and optionally write) its ledger. Blocks for the scenario's duration. ``retry_for``
    (HTTP only): seconds a request without an answer, or answered 429/503, is sent again."""
    plan = Plan(scenario, start_ms=int((time.time() + start_in) * 1000))
    if url is not None:
        ledger = asyncio.run(
            run_http(plan, url, api_key, batch=batch, linger_ms=linger_ms, progress=progress,
                     retry_for=retry_for))
    elif bootstrap is not None and topic is not None:
        ledger = asyncio.run(run_kafka(plan, bootstrap, topic, linger_ms=linger_ms, progress=progress))
    else:
        raise ValueError("generate needs url= (the ingestor) or bootstrap= and topic= (Kafka)")
    if ledger_path is not None:
        ledger.write(ledger_path)
    return ledger
