"""The chaos suite's accounting rule (tests/chaos/accounting.py) on a ledger without any I/O: a
perfect outcome passes, a missing or doubled page fails, same-key repeats are counted and pass."""

from __future__ import annotations

from collections import Counter

import pytest

from alertpipe.generate import Knobs, Ledger, Plan, Scenario, parse_schedule
from alertpipe.generate.ledger import RequestRecord
from tests.chaos.accounting import Outcome, account, check, delivery_key

pytestmark = pytest.mark.unit


def ledger() -> Ledger:
    sc = Scenario("t", "p", parse_schedule("steady:50"), 20.0, devices=10, seed=3, flappers=0.5,
                  episode_every_s=3.0, episode_len_s=1.0, knobs=Knobs(duplicates=0.05, late=0.05))
    plan = Plan(sc, start_ms=1_800_000_000_000)
    sends = list(plan.sends())
    led = Ledger(plan, "test", [RequestRecord(0, 0, 0, 202, len(sends))])
    return led


def perfect(led: Ledger) -> Outcome:
    out = Outcome()
    for s in Plan(led.plan.scenario, led.plan.start_ms).sends():
        out.events[(s.body["deviceId"], s.body["seq"])] += 1
        if s.kind == "late":
            out.late.add((s.body["deviceId"], s.body["seq"]))
    start = led.plan.start_ms / 1000
    for e in led.expected:
        k = delivery_key(e.id, e.status, "ops")
        out.accepted[k] += 1
        out.arrived_at[k] = start + (e.due_s or 20.0) + 0.1
    return out


def test_a_perfect_outcome_accounts_for_every_event_and_alert() -> None:
    led = ledger()
    due = next(e.due_s for e in led.expected if e.due_s is not None)
    acc = account("none", led, perfect(led), fault_end=led.plan.start_ms / 1000 + due)
    kinds = led.plan.counts
    assert led.expected and kinds["duplicate"] and kinds["late"]
    assert acc.sent == sum(kinds[k] for k in ("event", "reordered", "late", "duplicate"))
    assert acc.deduplicated == kinds["duplicate"] and acc.late == kinds["late"]
    assert acc.accepted + acc.deduplicated == acc.sent
    assert (acc.unaccounted, acc.missing, acc.doubled, acc.repeated) == (0, 0, 0, 0)
    assert acc.alerted == acc.expected == len(led.expected)
    assert acc.recovered_s == pytest.approx(0.1, abs=0.01)  # what was due by the fault's end came 0.1 s later
    check(acc)


def test_a_missing_page_a_second_page_and_a_lost_event_fail_repeats_do_not() -> None:
    led = ledger()
    out = perfect(led)
    first = delivery_key(led.expected[0].id, led.expected[0].status, "ops")
    out.accepted[first] += 2  # the receiver deduplicates these by Idempotency-Key
    acc = account("repeats", led, out)
    assert acc.repeated == 2 and acc.missing == acc.doubled == 0
    check(acc)

    del out.accepted[first]
    with pytest.raises(AssertionError, match="1 expected alert"):
        check(account("missing", led, out))

    out.accepted[first] = 1
    out.accepted[delivery_key("no-such-alert", "firing", "ops")] = 1
    with pytest.raises(AssertionError, match="1 doubled page"):
        check(account("doubled", led, out))

    del out.accepted[delivery_key("no-such-alert", "firing", "ops")]
    lost = next(iter(out.events))
    out.events = Counter({k: n for k, n in out.events.items() if k != lost})
    with pytest.raises(AssertionError, match="1 sent event"):
        check(account("lost", led, out))


def test_a_dead_lettered_alert_is_accounted_for_not_missing() -> None:
    led = ledger()
    out = perfect(led)
    first = delivery_key(led.expected[0].id, led.expected[0].status, "ops")
    del out.accepted[first]
    out.dead_alerts[first] = "retry budget spent (maxAttempts 3): 500"
    acc = account("dlq", led, out)
    assert acc.missing == 0 and acc.dead_lettered == 1 and acc.alerted == acc.expected - 1
