"""The generator's ledger: what it sent, how late its own sends were, which alerts must follow.

Written as one JSON document so that a test or a benchmark can check the outcome against it:
``expected`` lists every alert transition a correct pipeline raises once (deterministic ids, the
event time, and ``dueMs``: the wall-clock time a correct system had everything it needed, measured
from the *planned* send time, so that a generator falling behind cannot hide latency — no
coordinated omission). ``requests`` holds (planned, sent, answered, status, events) per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from alertpipe.generate.plan import Expected, Plan

__all__ = ["Ledger", "RequestRecord", "percentiles"]


def percentiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)) -> dict[str, float]:
    """Nearest-rank percentiles and the max (empty input: an empty dict)."""
    if not values:
        return {}
    v = sorted(values)
    out = {f"p{q * 100:g}": v[max(0, math.ceil(q * len(v)) - 1)] for q in qs}
    out["max"] = v[-1]
    return out


@dataclass(frozen=True, slots=True)
class RequestRecord:
    planned_ms: int  # the planned send time of the request's earliest event
    sent_ms: int  # when the request went out
    answered_ms: int  # when the answer (or the error) came back
    status: int  # HTTP status, 0 for a connection error; Kafka: 202 acknowledged, 0 failed
    events: int
    kind: str = "events"  # events, oversized


@dataclass
class Ledger:
    plan: Plan
    target: str
    requests: list[RequestRecord] = field(default_factory=list)
    finished_ms: int = 0

    @property
    def expected(self) -> list[Expected]:
        return self.plan.expected

    def lateness_ms(self) -> list[float]:
        return [float(r.sent_ms - r.planned_ms) for r in self.requests]

    def failed_events(self) -> int:
        """Events of requests that were not acknowledged (oversized requests excluded)."""
        return sum(r.events for r in self.requests if r.kind == "events" and r.status != 202)

    def complete(self) -> bool:
        """Every planned event was acknowledged: the expected alerts hold."""
        return self.failed_events() == 0

    def summary(self) -> dict[str, Any]:
        s = self.plan.scenario
        by_status: dict[str, int] = {}
        for r in self.requests:
            by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
        acks = [float(r.answered_ms - r.sent_ms) for r in self.requests if r.status == 202]
        return {
            "target": self.target,
            "schedule": s.schedule.text(),
            "durationS": s.duration,
            "devices": s.devices,
            "sent": dict(self.plan.counts),
            "requests": len(self.requests),
            "requestsByStatus": by_status,
            "failedEvents": self.failed_events(),
            "complete": self.complete(),
            "lateness": percentiles(self.lateness_ms()),
            "ackMs": percentiles(acks),
            "expectedAlerts": len(self.expected),
        }

    def to_json(self) -> dict[str, Any]:
        s = self.plan.scenario
        k = s.knobs
        start = self.plan.start_ms
        return {
            "version": 1,
            "tenant": s.tenant,
            "pipeline": s.pipeline,
            "startMs": self.plan.start_ms,
            "finishedMs": self.finished_ms,
            "scenario": {
                "seed": s.seed, "lateness_ms": s.lateness_ms, "flappers": s.flappers,
                "episode_every_s": s.episode_every_s, "episode_len_s": s.episode_len_s,
                "threshold": s.threshold, "for_ms": s.for_ms, "silent_devices": s.silent_devices,
                "absence_ms": s.absence_ms, "knobs": {f: getattr(k, f) for f in k.__slots__},
            },
            "rules": self.plan.rules(),
            "summary": self.summary(),
            "expected": [
                {**e.to_json(), "dueMs": None if e.due_s is None else start + round(e.due_s * 1000)}
                for e in self.expected
            ],
            "requests": [[r.planned_ms, r.sent_ms, r.answered_ms, r.status, r.events, r.kind]
                         for r in self.requests],
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_json()))
