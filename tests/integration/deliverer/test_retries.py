"""500s, 429 + Retry-After, timeouts, connection refused and 4xx: retried with backoff, then dead-lettered;
`alertpipe dlq replay` sends them back; fallback channels; duplicates skipped by the delivered mark."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from confluent_kafka import Producer

from alertpipe.cli import main as alertpipe_main
from tests.integration.deliverer.conftest import Pipeline, make_alert, running_deliverer, webhook
from tests.receivers import HttpReceiver, Reply, wait_until

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def retry(attempts: int) -> dict[str, object]:
    return {"maxAttempts": attempts, "maxAge": "60s", "initialBackoff": "50ms", "maxBackoff": "200ms"}


async def test_failures_are_retried_then_dead_lettered_and_replayed(
    pipeline: Pipeline, receiver: HttpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/hook"
    pipeline.update(
        channels=[
            webhook("flaky", receiver.url("/webhook/flaky"), retry=retry(5)),
            webhook("limited", receiver.url("/webhook/limited"), retry=retry(5)),
            webhook("refused", refused, retry=retry(3)),
            webhook("slow", receiver.url("/webhook/slow"), timeout="300ms", retry=retry(2)),
            webhook("bad", receiver.url("/webhook/bad"), retry=retry(5)),
            webhook("broken", receiver.url("/webhook/broken"), retry=retry(3)),
        ]
    )
    receiver.script("/webhook/flaky", [Reply(500), Reply(503)])
    receiver.script("/webhook/limited", [Reply(429, retry_after=1)])
    receiver.set_default("/webhook/slow", Reply(200, delay=2.0))
    receiver.set_default("/webhook/bad", Reply(400, body="unknown field 'alert'"))
    receiver.set_default("/webhook/broken", Reply(500, body="database is down"))
    alert = make_alert(7, ["flaky", "limited", "refused", "slow", "bad", "broken"])
    rec = receiver.recorder
    async with running_deliverer(pipeline):
        pipeline.produce([alert])
        await wait_until(lambda: len(pipeline.dead_letters()) == 4, 60, "4 dead letters")
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 1, 30, "offset committed")

        # 500, 503 → third attempt delivered; all with one key
        flaky = rec.on("/webhook/flaky")
        assert [r.status for r in flaky] == [500, 503, 200]
        assert {r.key for r in flaky} == {alert.delivery_key("flaky")}
        # 429 with Retry-After: 1 → the next attempt waited at least a second
        limited = rec.on("/webhook/limited")
        assert [r.status for r in limited] == [429, 200]
        assert limited[1].at - limited[0].at >= 0.95
        # 4xx is not retried
        assert [r.status for r in rec.on("/webhook/bad")] == [400]
        assert len(rec.on("/webhook/broken")) == 3

        dead = {d.channel: d for d in pipeline.dead_letters()}
        assert set(dead) == {"refused", "slow", "bad", "broken"}
        assert dead["refused"].attempts == 3 and "cannot connect" in dead["refused"].reason
        assert dead["slow"].attempts == 2 and "timed out" in dead["slow"].reason
        assert dead["bad"].attempts == 1 and dead["bad"].last_status == 400
        assert "unknown field" in dead["bad"].last_response and "permanent" not in dead["bad"].reason
        assert dead["broken"].attempts == 3 and dead["broken"].last_status == 500
        assert "database is down" in dead["broken"].last_response and "exhausted" in dead["broken"].reason
        assert all(
            d.alert["id"] == alert.id and d.delivery_key == alert.delivery_key(c) for c, d in dead.items()
        )

        audit = pipeline.audit()
        retries = [e for e in audit if e.decision == "retry" and e.channel == "flaky"]
        assert [e.status_code for e in retries] == [500, 503] and all(e.delay_s is not None for e in retries)
        assert [e.attempt for e in audit if e.channel == "broken"] == [1, 2, 3]

        # `alertpipe dlq list` shows them (JSON lines), filtered by channel
        cfg = f"file:{pipeline.config_path}"
        capsys.readouterr()
        code = await asyncio.to_thread(
            alertpipe_main, ["dlq", "list", "--config", cfg, "--json", "--channel", "bad"]
        )
        assert code == 0
        listed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        assert [(x["channel"], x["attempts"], x["last_status"]) for x in listed] == [("bad", 1, 400)]

        # the receivers recover; replay only `bad` first, then everything
        receiver.set_default("/webhook/bad", None)
        receiver.set_default("/webhook/broken", None)
        receiver.set_default("/webhook/slow", None)
        cfg = f"file:{pipeline.config_path}"
        code = await asyncio.to_thread(alertpipe_main, ["dlq", "replay", "--config", cfg, "--channel", "bad"])
        assert code == 0
        await wait_until(lambda: len(rec.accepted("/webhook/bad")) == 1, 30, "bad replayed")
        assert rec.accepted("/webhook/bad")[0].key == alert.delivery_key("bad")
        assert rec.accepted("/webhook/broken") == []
        code = await asyncio.to_thread(alertpipe_main, ["dlq", "replay", "--config", cfg, "--since", "10m"])
        assert code == 0
        # (the receiver behind `slow` answered 200 after our timeout twice already: a timeout is
        # ambiguous, which is why every attempt carries the same Idempotency-Key)
        await wait_until(
            lambda: (
                len(rec.accepted("/webhook/broken")) == 1
                and any(e.decision == "delivered" and e.channel == "slow" for e in pipeline.audit())
            ),
            30,
            "broken and slow replayed",
        )
        assert {r.key for r in rec.on("/webhook/slow")} == {alert.delivery_key("slow")}
        # `bad` was replayed twice but is delivered once: the delivered mark skips the second
        await wait_until(
            lambda: any(e.decision == "skipped_delivered" and e.channel == "bad" for e in pipeline.audit()),
            30,
            "second replay of bad skipped",
        )
        assert len(rec.accepted("/webhook/bad")) == 1
        assert rec.duplicates() == len(rec.accepted("/webhook/slow")) - 1

    # `alertpipe explain` tells the story from the decision log
    capsys.readouterr()
    code = await asyncio.to_thread(alertpipe_main, ["explain", alert.id, "--config", cfg, "--json"])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    decisions = [(x["decision"], x["channel"]) for x in lines]
    assert decisions[0] == ("received", "")
    assert ("dead_lettered", "bad") in decisions and ("delivered", "bad") in decisions
    assert [x["status_code"] for x in lines if x["channel"] == "flaky"] == [500, 503, 200]


async def test_fallback_and_duplicate_alerts(pipeline: Pipeline, receiver: HttpReceiver) -> None:
    pipeline.update(
        channels=[
            webhook("primary", receiver.url("/webhook/primary"), retry=retry(2), fallback="backup"),
            webhook("backup", receiver.url("/webhook/backup")),
            webhook("once", receiver.url("/webhook/once")),
        ]
    )
    receiver.set_default("/webhook/primary", Reply(503))
    a = make_alert(1, ["primary"])
    b = make_alert(2, ["once"])
    async with running_deliverer(pipeline):
        raw = Producer({"bootstrap.servers": pipeline.bootstrap})
        raw.produce(pipeline.config.kafka.topics.alerts, key=b"x", value=b"not an alert {")
        assert raw.flush(30) == 0
        pipeline.produce([a, b, b, b])  # b three times: a replayed/redelivered alert
        await wait_until(
            lambda: len(receiver.recorder.accepted("/webhook/backup")) == 1, 30, "fallback delivery"
        )
        await wait_until(lambda: pipeline.committed(pipeline.group()) == 5, 30, "all offsets committed")
    rec = receiver.recorder
    invalid = [d for d in pipeline.dead_letters() if not d.channel]
    assert (
        len(invalid) == 1
        and invalid[0].extra["raw"] == "not an alert {"
        and "not an alert" in invalid[0].reason
    )
    assert rec.accepted("/webhook/backup")[0].key == a.delivery_key("backup")
    assert len(rec.on("/webhook/primary")) == 2
    assert len(rec.accepted("/webhook/once")) == 1
    audit = pipeline.audit()
    assert sum(e.decision == "skipped_delivered" and e.channel == "once" for e in audit) == 2
    assert [e.decision for e in audit if e.alert_id == a.id and e.decision != "retry"] == [
        "received",
        "dead_lettered",
        "fallback",
        "delivered",
    ]


async def test_ssrf_guard_refuses_loopback_unless_allowed(pipeline: Pipeline, receiver: HttpReceiver) -> None:
    pipeline.update(
        delivery={"allowPrivateNetworks": False},
        channels=[
            webhook("hook", receiver.url("/webhook/hook")),
            webhook("named", receiver.url("/webhook/named").replace("127.0.0.1", "localhost")),
        ],
    )
    async with running_deliverer(pipeline):
        pipeline.produce([make_alert(1, ["hook", "named"])])
        await wait_until(lambda: len(pipeline.dead_letters()) == 2, 30, "both refused")
    assert receiver.recorder.items == []
    for d in pipeline.dead_letters():
        assert "delivery.allowedNetworks" in d.reason and "loopback" in d.reason
