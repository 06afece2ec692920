"""The Deliverer built with in-memory collaborators at its seams (memory.py): what it delivers,
retries, dead-letters, parks, skips and commits, without Kafka, Redis or HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from alertpipe.workers.alerts import Alert, alert_id
from alertpipe.workers.config import PipelineConfig, StaticConfigSource
from alertpipe.workers.deliverer import tasks
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.worker import Deliverer
from alertpipe.workers.errors import DeliveryError
from tests.unit.deliverer.memory import Broker, MemoryBackends, ScriptedSender

pytestmark = pytest.mark.unit

FAST_RETRY = {"maxAttempts": 3, "maxAge": "30s", "initialBackoff": "10ms", "maxBackoff": "20ms"}
T = "t"  # topic prefix


def config(channels: list[dict[str, Any]], retry_topic: bool = False, **extra: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "tenant": "acme",
            "pipeline": "prod",
            "kafka": {
                "bootstrapServers": "memory:9092",
                "topics": {
                    "events": f"{T}.events",
                    "alerts": f"{T}.alerts",
                    "late": f"{T}.late",
                    "deadLetter": f"{T}.dlq",
                    "audit": f"{T}.audit",
                    **({"retry": f"{T}.retry"} if retry_topic else {}),
                },
            },
            "redis": {"url": "redis://memory", "keyPrefix": T},
            "channels": channels,
            **extra,
        }
    ).with_revision()


def hook(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "webhook": {"url": f"https://hooks.example/{name}"}, "retry": FAST_RETRY, **kw}


def alert(n: int, channels: list[str], status: str = "firing") -> Alert:
    now = int(time.time() * 1000)
    return Alert(
        id=alert_id("acme", "prod", "cpu-high", f"deviceId=d{n}", 1_760_000_000_000),
        status=status,
        tenant="acme",
        pipeline="prod",
        rule="cpu-high",
        severity="critical",
        group_key=f"deviceId=d{n}",
        labels={},
        annotations={"summary": f"d{n}"},
        values={"value": n},
        channels=channels,
        starts_at_ms=1_760_000_000_000,
        ends_at_ms=1_760_000_060_000 if status == "resolved" else None,
        event_time_ms=now,
        processed_at_ms=now,
    )


class Run:
    def __init__(self, deliverer: Deliverer, backends: MemoryBackends, source: StaticConfigSource) -> None:
        self.d = deliverer
        self.backends = backends
        self.broker: Broker = backends.broker
        self.source = source

    def produce(self, *alerts: Alert) -> None:
        for a in alerts:
            self.broker.produce(f"{T}.alerts", a.id, a.to_json())

    def decisions(self, channel: str | None = None) -> list[str]:
        return [
            e.decision for e in self.broker.audit(f"{T}.audit") if channel is None or e.channel == channel
        ]

    def all_committed(self, topic: str = f"{T}.alerts") -> bool:
        ends = {p: o for p, o in self.broker.end_offsets(topic).items() if o}
        return self.broker.group_committed("g", topic) == ends if ends else True


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    cfg: PipelineConfig, sender: ScriptedSender, backends: MemoryBackends | None = None, **settings: Any
) -> AsyncIterator[Run]:
    backends = backends or MemoryBackends()
    source = StaticConfigSource(cfg)
    settings.setdefault("commit_interval", 0.02)
    settings.setdefault("breaker_cooldown", 0.2)
    d = Deliverer(source, lambda ref: "secret", DelivererSettings(group_id="g", **settings), sender, backends)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await until(lambda: d.ready.is_set() or task.done(), "deliverer ready")
        if task.done():
            task.result()
        yield Run(d, backends, source)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_delivers_each_channel_once_and_commits_past_it() -> None:
    sender = ScriptedSender()
    async with running(config([hook("a"), hook("b")]), sender) as run:
        alerts = [alert(n, ["a", "b", "a"]) for n in range(5)]  # a channel named twice is one delivery
        run.produce(*alerts)
        await until(lambda: len(sender.sent) == 10 and run.all_committed(), "10 sends, all committed")
    assert sorted((s.alert_id, s.channel) for s in sender.sent) == sorted(
        (a.id, c) for a in alerts for c in ("a", "b")
    )
    assert {s.key for s in sender.sent} == {a.delivery_key(c) for a in alerts for c in ("a", "b")}
    assert run.decisions().count("delivered") == 10
    assert set(run.backends.claim_table.state.values()) == {"d"}
    # shut down cleanly: consumer closed, claims and backends closed
    assert run.backends.consumers[0].closed and run.backends.closed and run.backends.publishers[0].closed


async def test_a_retryable_failure_is_retried_and_a_permanent_one_dead_lettered_then_falls_back() -> None:
    sender = ScriptedSender()
    sender.script("flaky", [DeliveryError("HTTP 503", retryable=True, status=503)])
    sender.defaults["bad"] = DeliveryError("HTTP 400: unknown field", retryable=False, status=400)
    cfg = config([hook("flaky"), hook("bad", fallback="spare"), hook("spare")])
    async with running(cfg, sender) as run:
        a = alert(1, ["flaky", "bad"])
        run.produce(a)
        await until(lambda: len(sender.on("spare")) == 1 and run.all_committed(), "fallback delivered")
        dead = run.broker.dead_letters(f"{T}.dlq")
    assert run.decisions("flaky") == ["retry", "delivered"]
    assert run.decisions("bad") == ["dead_lettered", "fallback"]
    assert run.decisions("spare") == ["delivered"]
    assert len(sender.on("bad")) == 1  # a 4xx is not retried
    assert [(d.channel, d.attempts, d.last_status) for d in dead] == [("bad", 1, 400)]
    assert run.backends.claim_table.state[a.delivery_key("bad")] == "x"


async def test_retries_stop_at_the_budget() -> None:
    sender = ScriptedSender(DeliveryError("HTTP 500", retryable=True, status=500))
    async with running(config([hook("down")]), sender) as run:
        run.produce(alert(1, ["down"]))
        await until(lambda: bool(run.broker.dead_letters(f"{T}.dlq")), "dead letter")
        await until(run.all_committed, "committed")
    (dl,) = run.broker.dead_letters(f"{T}.dlq")
    assert dl.attempts == 3 and "exhausted" in dl.reason
    assert run.decisions("down") == ["retry", "retry", "dead_lettered"]


async def test_an_alert_delivered_before_is_skipped_not_sent_again() -> None:
    sender = ScriptedSender()
    backends = MemoryBackends()
    a = alert(1, ["a"])
    backends.claim_table.state[a.delivery_key("a")] = "d"  # another worker delivered it
    async with running(config([hook("a")]), sender, backends) as run:
        run.produce(a)
        await until(run.all_committed, "committed")
    assert sender.sent == []
    assert run.decisions("a") == ["skipped_delivered"]


async def test_muted_channel_is_recorded_and_not_sent_and_unknown_channel_dead_letters() -> None:
    until_ = (datetime.now(tz=UTC) + timedelta(hours=1)).isoformat()
    ks = {"mutedChannels": [{"name": "quiet", "reason": "maintenance", "until": until_}]}
    sender = ScriptedSender()
    async with running(config([hook("quiet"), hook("a")], killSwitches=ks), sender) as run:
        run.produce(alert(1, ["quiet", "a", "nowhere"]))
        await until(lambda: run.all_committed() and len(run.decisions()) == 3, "three decisions")
        dead = run.broker.dead_letters(f"{T}.dlq")
    assert [s.channel for s in sender.sent] == ["a"]
    assert run.decisions("quiet") == ["muted"]
    assert [d.channel for d in dead] == ["nowhere"] and "not defined" in dead[0].reason


async def test_stop_delivery_holds_alerts_uncommitted_until_lifted() -> None:
    sender = ScriptedSender()
    paused = config([hook("a")], killSwitches={"stopDelivery": {"reason": "incident"}})
    async with running(paused, sender) as run:
        run.produce(alert(1, ["a"]))
        await asyncio.sleep(0.3)
        assert sender.sent == [] and run.broker.group_committed("g", f"{T}.alerts") == {}
        run.source.set(config([hook("a")]))
        await until(lambda: len(sender.sent) == 1 and run.all_committed(), "delivered once lifted")


async def test_the_lag_gauge_counts_the_alerts_not_yet_terminal() -> None:
    def lag() -> float | None:
        return REGISTRY.get_sample_value("alertpipe_deliverer_consumer_lag_messages", {"tenant": "acme"})

    sender = ScriptedSender()
    paused = config([hook("a")], killSwitches={"stopDelivery": {"reason": "incident"}})
    async with running(paused, sender) as run:
        run.produce(alert(1, ["a"]), alert(2, ["a"]), alert(3, ["a"]))
        await until(lambda: lag() == 3, "three alerts waiting")
        run.source.set(config([hook("a")]))
        await until(lambda: len(sender.sent) == 3 and lag() == 0, "none left once lifted")


async def test_not_an_alert_is_dead_lettered_and_its_offset_committed() -> None:
    async with running(config([hook("a")]), ScriptedSender()) as run:
        run.broker.produce(f"{T}.alerts", b"k", b'{"not": "an alert"}')
        await until(lambda: bool(run.broker.dead_letters(f"{T}.dlq")) and run.all_committed(), "dead letter")
        (dl,) = run.broker.dead_letters(f"{T}.dlq")
    assert dl.reason.startswith("not an alert") and '"not"' in dl.extra["raw"]


async def test_redis_and_broker_away_delay_the_delivery_and_lose_nothing() -> None:
    backends = MemoryBackends()
    backends.claim_table.away = 3  # the first three claim calls fail
    sender = ScriptedSender(DeliveryError("HTTP 400", retryable=False, status=400))
    async with running(config([hook("a")]), sender, backends) as run:
        run.backends.publishers[0].fail_sends = 2  # the dead-letter write fails twice first
        run.produce(alert(1, ["a"]))
        await until(
            lambda: bool(run.broker.dead_letters(f"{T}.dlq")) and run.all_committed(), "dead letter", 10
        )
    assert len(sender.sent) == 1 and len(run.broker.dead_letters(f"{T}.dlq")) == 1


async def test_redis_refusing_the_claim_holds_the_delivery_then_it_goes_out_once() -> None:
    backends = MemoryBackends()
    backends.claim_table.refuse = 3  # out of memory: the first three claim calls are refused
    sender = ScriptedSender()
    async with running(config([hook("a")]), sender, backends) as run:
        a = alert(1, ["a"])
        run.produce(a)
        await until(lambda: run.all_committed() and run.decisions("a") == ["delivered"], "delivered", 10)
    assert len(sender.sent) == 1 and not run.broker.dead_letters(f"{T}.dlq")
    assert run.backends.claim_table.refuse == 0 and run.backends.claim_table.state[a.delivery_key("a")] == "d"


async def test_a_delivery_that_fails_unexpectedly_is_started_again_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "RETRY_FIRST", 0.01)
    sender = ScriptedSender()
    async with running(config([hook("a"), hook("b")]), sender) as run:
        run.backends.publishers[0].fail_fires = 2  # the decision log's producer queue is full, twice
        errors = "alertpipe_deliverer_delivery_errors_total"
        before = REGISTRY.get_sample_value(errors, {"tenant": "acme"}) or 0
        run.produce(alert(1, ["a", "b"]))

        def both_sent() -> bool:
            return run.all_committed() and sorted(s.channel for s in sender.sent) == ["a", "b"]

        await until(both_sent, "both sent", 10)
        after = REGISTRY.get_sample_value(errors, {"tenant": "acme"})
    assert after == before + 2
    assert len(sender.sent) == 2  # each channel paged once: the rerun found its claim marked delivered


async def test_a_failing_delivery_is_parked_committed_and_delivered_from_the_retry_topic() -> None:
    sender = ScriptedSender()
    sender.script("a", [DeliveryError("HTTP 503", retryable=True, status=503)])
    async with running(config([hook("a")], retry_topic=True), sender, local_attempts=1) as run:
        a = alert(1, ["a"])
        run.produce(a)
        await until(lambda: len(sender.sent) == 2, "the second attempt, read back from the retry topic")
        await until(lambda: run.all_committed() and run.all_committed(f"{T}.retry"), "both topics committed")
        (parked,) = run.broker.parked(f"{T}.retry")
    assert parked.channel == "a" and parked.attempts == 1 and parked.hops == 1 and parked.last_status == 503
    assert run.decisions("a") == ["parked", "delivered"]
    delivered = [e for e in run.broker.audit(f"{T}.audit") if e.decision == "delivered"]
    assert delivered[0].attempt == 2  # the attempt count travels with the park
    assert run.backends.claim_table.state[a.delivery_key("a")] == "d"


async def test_a_resolve_never_overtakes_its_firing() -> None:
    sender = ScriptedSender()
    sender.script("a", [DeliveryError("HTTP 503", retryable=True, status=503)])
    async with running(config([hook("a")]), sender) as run:
        firing, resolved = alert(1, ["a"]), alert(1, ["a"], status="resolved")
        assert firing.id == resolved.id
        run.produce(firing, resolved)
        await until(lambda: len(sender.sent) == 3, "two firing attempts, then the resolve")
        await until(run.all_committed, "committed")
    assert [e.status for e in run.broker.audit(f"{T}.audit") if e.decision == "delivered"] == [
        "firing",
        "resolved",
    ]
