"""The chaos suite's accounting rule, checked against the generator's ledger.

Every event the generator sent is accounted for — evaluated, deduplicated (a second copy of a
(deviceId, seq) on the events topic: the generator's duplicates and the replays of client
retries), reported late (late topic), dead-lettered, or rejected by the ingestor with a 4xx — and
every alert the ledger expects reaches the receiver (or the dead-letter topic with a reason).
Repeats under the same Idempotency-Key are allowed (the receiver deduplicates them) and counted;
a page no correct system raises, or one alert paged under a second key, is *doubled*.
``account()`` is pure (a unit test holds it); ``read_outcome()`` collects what it needs.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from alertpipe.generate import Ledger, Plan

__all__ = ["Account", "Outcome", "account", "check", "read_outcome", "report"]

EventId = tuple[str, int]  # (deviceId, seq)


@dataclass
class Outcome:
    """What the system did: topic contents (as event ids or alert keys) and receiver arrivals."""

    events: Counter[EventId] = field(default_factory=Counter)  # copies on the events topic
    late: set[EventId] = field(default_factory=set)
    dead_events: set[EventId] = field(default_factory=set)  # the evaluator's dead letters
    dead_alerts: dict[str, str] = field(default_factory=dict)  # delivery key -> reason (deliverer's)
    accepted: Counter[str] = field(default_factory=Counter)  # delivery key -> 2xx answers
    arrived_at: dict[str, float] = field(default_factory=dict)  # delivery key -> first 2xx (epoch s)


@dataclass
class Account:
    fault: str
    sent: int  # sends of the generator (duplicates and late copies included)
    accepted: int  # distinct events on the events topic
    deduplicated: int
    late: int
    dead_lettered: int  # events and alerts
    rejected: int  # events the ingestor refused with a 4xx (malformed, oversized)
    unaccounted: int  # sent events found nowhere: lost
    expected: int
    alerted: int
    missing: int
    doubled: int
    repeated: int  # same-key repeats the receiver deduplicates
    recovered_s: float | None = None  # fault cleared -> every alert due by then had arrived
    max_delay_s: float | None = None  # worst arrival - due time over the expected alerts
    examples: dict[str, list[str]] = field(default_factory=dict)

    HEADER = ("fault", "sent", "accepted", "deduplicated", "late", "dead_lettered", "rejected",
              "unaccounted", "expected", "alerted", "missing", "doubled", "repeated", "recovered_s",
              "max_delay_s")

    def row(self) -> list[str]:
        return ["-" if getattr(self, h) is None else str(getattr(self, h)) for h in self.HEADER]

    def table(self) -> str:
        cells = [list(self.HEADER), self.row()]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.HEADER))]
        return "\n".join(" | ".join(c[i].rjust(widths[i]) for i in range(len(widths))) for c in cells)


def delivery_key(alert_id: str, status: str, channel: str) -> str:
    return f"{alert_id}:{status}:{channel}"


def account(fault: str, ledger: Ledger, outcome: Outcome, channels: tuple[str, ...] = ("ops",),
            fault_end: float | None = None) -> Account:
    """The ledger table of one run (see the module docstring for what each column counts)."""
    plan = ledger.plan
    replay = Plan(plan.scenario, plan.start_ms)  # the same sends again, deterministically
    sends = list(replay.sends())
    kinds = Counter(s.kind for s in sends)
    refused = sum(r.events if r.kind == "events" else 1 for r in ledger.requests
                  if 400 <= r.status < 500 and r.status != 429)
    ids: set[EventId] = {(s.body["deviceId"], s.body["seq"]) for s in sends
                         if s.kind in ("event", "reordered", "late", "duplicate")}
    lost = sorted(i for i in ids if outcome.events[i] == 0 and i not in outcome.dead_events)
    want = {delivery_key(e.id, e.status, ch): e for e in ledger.expected for ch in channels}
    got = {k for k, n in outcome.accepted.items() if n > 0}
    missing = sorted(k for k in want if k not in got and k not in outcome.dead_alerts)
    unexpected = sorted(got - set(want))
    by_alert = Counter(k.split(":", 1)[0] + ":" + k.rsplit(":", 1)[-1] for k in got)  # id:channel
    cross = [k for k, n in by_alert.items() if n > 2]  # firing + resolved: at most two keys per alert id
    due = {k: plan.start_ms / 1000 + e.due_s for k, e in want.items() if e.due_s is not None}
    delays = [outcome.arrived_at[k] - t for k, t in due.items() if k in outcome.arrived_at]
    recovered = None
    if fault_end is not None:
        backlog = [outcome.arrived_at[k] for k, t in due.items()
                   if t <= fault_end and k in outcome.arrived_at]
        recovered = round(max(0.0, max(backlog, default=fault_end) - fault_end), 2)
    return Account(
        fault=fault,
        sent=sum(kinds[k] for k in ("event", "reordered", "late", "duplicate", "malformed", "oversized")),
        accepted=sum(1 for i in ids if outcome.events[i] > 0),
        deduplicated=sum(n - 1 for n in outcome.events.values() if n > 1),
        late=len(outcome.late & ids),
        dead_lettered=len(outcome.dead_events) + len(outcome.dead_alerts),
        rejected=refused,
        unaccounted=len(lost),
        expected=len(want),
        alerted=len(got & set(want)),
        missing=len(missing),
        doubled=len(unexpected) + len(cross),
        repeated=sum(n - 1 for k, n in outcome.accepted.items() if n > 1),
        recovered_s=recovered,
        max_delay_s=round(max(delays), 2) if delays else None,
        examples={"lost": [f"{d}#{s}" for d, s in lost[:5]], "missing": missing[:5],
                  "unexpected": unexpected[:5], "cross": cross[:5]},
    )


def check(acc: Account) -> None:
    """Print the ledger table (pytest shows it with -s or on failure) and fail on a broken promise."""
    print(f"\nledger of {acc.fault}:\n{acc.table()}")
    report(acc)
    problems = []
    if acc.unaccounted:
        problems.append(f"{acc.unaccounted} sent event(s) found nowhere, e.g. {acc.examples['lost']}")
    if acc.missing:
        problems.append(f"{acc.missing} expected alert(s) never arrived, e.g. {acc.examples['missing']}")
    if acc.doubled:
        eg = acc.examples["unexpected"] or acc.examples["cross"]
        problems.append(f"{acc.doubled} doubled page(s), e.g. {eg}")
    assert not problems, f"{acc.fault}: " + "; ".join(problems) + f"\n{acc.table()}"


def report(acc: Account) -> None:
    """Append the row to ALERTPIPE_CHAOS_REPORT (JSON lines) when set: docs/reliability.md's source."""
    path = os.environ.get("ALERTPIPE_CHAOS_REPORT")
    if path:
        with Path(path).open("a") as f:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            f.write(json.dumps({**asdict(acc), "at": at}) + "\n")


def read_outcome(bootstrap: str, topics: dict[str, str], recorder: Any, hook_path: str) -> Outcome:
    """Read the events, late and dead-letter topics to their ends, and the receiver's 2xx answers."""
    from alertpipe.workers.deliverer.reading import read_topic

    opts = {"bootstrap.servers": bootstrap}
    out = Outcome()
    for m in read_topic(opts, topics["events"]):
        i = _event_id(m.value())
        if i is not None:
            out.events[i] += 1
    for m in read_topic(opts, topics["late"]):
        i = _event_id(m.value())
        if i is not None:
            out.late.add(i)
    for m in read_topic(opts, topics["deadLetter"]):
        doc = _json(m.value())
        if isinstance(doc, dict) and doc.get("kind") == "delivery":
            a = doc.get("alert") or {}
            out.dead_alerts[delivery_key(a.get("id", ""), a.get("status", ""), doc.get("channel", ""))] = str(
                doc.get("reason", ""))
        elif isinstance(doc, dict) and isinstance(doc.get("valueBase64"), str):  # the evaluator's
            i = _event_id(base64.b64decode(doc["valueBase64"]))
            if i is not None:
                out.dead_events.add(i)
    for r in recorder.accepted(hook_path):
        if r.key:
            out.accepted[r.key] += 1
            out.arrived_at.setdefault(r.key, r.at)
    return out


def _json(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None


def _event_id(raw: bytes | None) -> EventId | None:
    doc = _json(raw)
    if isinstance(doc, dict) and isinstance(doc.get("deviceId"), str) and isinstance(doc.get("seq"), int):
        return doc["deviceId"], doc["seq"]
    return None
