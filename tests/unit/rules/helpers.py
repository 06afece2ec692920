"""Shared helpers for the engine tests: rules from dicts, a stream runner, comparable alerts."""

from __future__ import annotations

from typing import Any

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.rules import CompiledRule, compile_rule
from alertpipe.workers.rules.engine import Engine, EngineSettings, Partition

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def rule(name: str, **spec: Any) -> CompiledRule:
    return compile_rule(name, RuleSpec.model_validate(spec))


def engine(*rules: CompiledRule, lateness_ms: int = 5000) -> Engine:
    return Engine(EngineSettings("acme", "main", lateness_ms), list(rules), clock=lambda: 0.0)


def ev(dev: str, seq: int, t_s: float, typ: str = "cpu", **fields: Any) -> dict[str, Any]:
    return {"tenant": "acme", "deviceId": dev, "seq": seq, "ts": T0 + int(t_s * 1000), "type": typ, **fields}


def feed(part: Partition, events: list[dict[str, Any]]) -> list[int]:
    return [part.offer(e, e["deviceId"], e["seq"], e["ts"]) for e in events]


def comparable(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Alerts without the wall clock, sorted: what must not depend on arrival order."""
    out = []
    for a in alerts:
        b = {k: v for k, v in a.items() if k != "processedAtMs"}
        out.append(tuple(sorted((k, repr(v)) for k, v in b.items())))
    return sorted(out)


def run(
    rules: list[CompiledRule], events: list[dict[str, Any]], lateness_ms: int = 5000
) -> tuple[list[dict[str, Any]], Partition]:
    part = engine(*rules, lateness_ms=lateness_ms).partition(0)
    feed(part, events)
    part.flush()
    return part.take_alerts(), part
