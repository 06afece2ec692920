"""kill -9 the deliverer at random points while alerts flow, for each channel kind: 0 lost, and a
repeat only where the design allows one — a delivery the receiver had taken but that was not yet
marked delivered in Redis when the process died (at most the sends in flight: maxConcurrency)."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.deliverer.conftest import (
    SLACK_TOKEN,
    Pipeline,
    deliverer_process,
    kill9,
    make_alert,
    terminate,
    webhook,
)
from tests.integration.deliverer.crashes import check_repeats, unmarked
from tests.receivers import HttpReceiver, SmtpReceiver, wait_until

pytestmark = pytest.mark.integration

CONCURRENCY = 64
# (channel kind, alerts, kills): the webhook is the long run; the others check their own send path
KINDS = [("webhook", 10_000, 4), ("slack", 1_500, 2), ("pagerduty", 1_500, 2), ("email", 400, 2)]


def channel(kind: str, pipeline: Pipeline, receiver: HttpReceiver, smtp: SmtpReceiver) -> dict[str, Any]:
    limits = {"rateLimitPerSecond": 100_000, "maxConcurrency": CONCURRENCY}
    if kind == "webhook":
        return webhook("sink", receiver.url("/webhook/sink"), **limits)
    if kind == "slack":
        (pipeline.secrets_dir / "slack").mkdir(exist_ok=True)
        (pipeline.secrets_dir / "slack" / "url").write_text(
            receiver.url(f"/slack/{SLACK_TOKEN.replace('/', '-')}")
        )
        return {"name": "sink", "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}}, **limits}
    if kind == "pagerduty":
        pd = {
            "routingKeySecretRef": {"name": "pd", "key": "routing-key"},
            "url": receiver.url("/pagerduty/v2/enqueue"),
        }
        return {"name": "sink", "pagerduty": pd, **limits}
    email = {
        "host": "127.0.0.1",
        "port": smtp.port,
        "starttls": False,
        "from": "alerts@acme.test",
        "to": ["oncall@acme.test"],
        "usernameSecretRef": {"name": "smtp", "key": "username"},
        "passwordSecretRef": {"name": "smtp", "key": "password"},
    }
    return {"name": "sink", "email": email, **limits}


def taken_by(kind: str, receiver: HttpReceiver, smtp: SmtpReceiver) -> Callable[[], Counter[str]]:
    """How many times the receiver took each delivery key (2xx, or a 250 for the SMTP server)."""
    if kind == "email":
        return lambda: Counter(str(m["Idempotency-Key"]) for m in list(smtp.messages))
    return lambda: Counter(receiver.recorder.accepted_by_key)


def reached(taken: Callable[[], Counter[str]], n: int) -> bool:
    return len(taken()) >= n


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("kind", "n", "kills"), KINDS, ids=[k[0] for k in KINDS])
async def test_kill_9_loses_nothing_and_repeats_only_what_was_in_flight(
    pipeline: Pipeline,
    receiver: HttpReceiver,
    smtp: SmtpReceiver,
    tmp_path: Path,
    kind: str,
    n: int,
    kills: int,
) -> None:
    pipeline.update(
        channels=[channel(kind, pipeline, receiver, smtp)],
        kafka={
            **pipeline.config.kafka.model_dump(mode="json", by_alias=True),
            "clientOptions": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        },
    )
    alerts = [make_alert(i, ["sink"]) for i in range(n)]
    expected = {a.delivery_key("sink") for a in alerts}
    assert len(expected) == n
    taken = taken_by(kind, receiver, smtp)
    pipeline.produce(alerts)
    rng = random.Random()
    thresholds = sorted(rng.sample(range(n // 20, n - n // 20), kills))
    log = tmp_path / "deliverer.log"
    proc = deliverer_process(pipeline, log=log)
    at_kill: list[set[str]] = []  # per kill: taken by the receiver, not marked delivered
    try:
        for i, at in enumerate(thresholds):
            await wait_until(functools.partial(reached, taken, at), 180, f"{at} keys delivered (run {i})")
            # a random point inside the flow: some sends in flight, claims held, offsets uncommitted
            await asyncio.sleep(rng.uniform(0, 0.05))
            kill9(proc)
            await asyncio.sleep(0.3)  # what the dead process had on the wire reaches the receiver
            at_kill.append(unmarked(pipeline, taken()))
            print(f"kill -9 #{i + 1} after {len(taken())} keys: {len(at_kill[-1])} taken, not marked")
            proc = deliverer_process(pipeline, log=log)
        await wait_until(lambda: len(taken()) >= n, 300, "every alert delivered")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == n, 60, "all offsets committed")
    except AssertionError:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        terminate(proc)
    counts = taken()
    lost = expected - set(counts)
    assert not lost, f"{len(lost)} alerts never delivered"
    assert set(counts) <= expected  # a repeat is always the same Idempotency-Key
    total = check_repeats(counts, at_kill, CONCURRENCY)
    print(
        f"crash test ({kind}): {n} alerts, {kills} kill -9, 0 lost, {total} repeats "
        f"({total / kills:.1f} per kill; taken-not-marked at the kills: {[len(u) for u in at_kill]})"
    )
