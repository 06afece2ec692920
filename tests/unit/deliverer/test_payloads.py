"""Channel payloads: webhook body and signature, Slack blocks, PagerDuty v2 events, email; SSRF; records."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.deliverer import payloads
from alertpipe.workers.deliverer.channels import is_muted, is_paused
from alertpipe.workers.deliverer.records import AuditEntry, DeadLetter, dead_letter_from_json
from alertpipe.workers.deliverer.ssrf import SsrfPolicy, blocked_reason, check_url
from alertpipe.workers.errors import DeliveryError
from tests.receivers.http import pagerduty_errors, slack_errors

pytestmark = pytest.mark.unit


def make_alert(status: str = "firing", **kw) -> Alert:
    base = dict(
        id="a" * 32,
        status=status,
        tenant="acme",
        pipeline="prod",
        rule="cpu-high",
        severity="critical",
        group_key="deviceId=d1",
        labels={"team": "infra", "link": "https://grafana.example/d/1"},
        annotations={"summary": "CPU 93 on d1"},
        values={"value": 93},
        channels=["hook"],
        starts_at_ms=1_760_000_000_000,
        event_time_ms=1_760_000_000_000,
        processed_at_ms=1_760_000_000_100,
    )
    base.update(kw)
    return Alert.model_validate(base)


def test_webhook_body_and_signature_verify() -> None:
    alert = make_alert()
    key = alert.delivery_key("hook")
    body = payloads.webhook_body(alert, "hook", key)
    doc = orjson.loads(body)
    assert doc["idempotencyKey"] == f"{alert.id}:firing:hook"
    assert doc["alert"]["groupKey"] == "deviceId=d1" and doc["alert"]["status"] == "firing"
    ts = int(time.time())
    sig = payloads.sign(b"s3cret", ts, body)
    assert sig.startswith("v1=") and len(sig) == 3 + 64
    assert payloads.verify_signature(b"s3cret", str(ts), body, sig, now=time.time())
    assert not payloads.verify_signature(b"other", str(ts), body, sig)
    assert not payloads.verify_signature(b"s3cret", str(ts), body + b" ", sig)
    assert not payloads.verify_signature(
        b"s3cret", str(ts - 1000), body, payloads.sign(b"s3cret", ts - 1000, body), now=time.time()
    )


def test_slack_message_is_valid_for_firing_and_resolved() -> None:
    firing = payloads.slack_message(make_alert())
    assert slack_errors(firing) is None
    assert firing["blocks"][0]["text"]["text"].startswith("[FIRING]")
    assert any("grafana" in str(b) for b in firing["blocks"])
    resolved = payloads.slack_message(make_alert("resolved", ends_at_ms=1_760_000_060_000))
    assert slack_errors(resolved) is None and "RESOLVED" in resolved["text"]


def test_slack_limits_are_respected_for_huge_alerts() -> None:
    msg = payloads.slack_message(
        make_alert(
            rule="r" * 60,
            annotations={"summary": "x" * 10_000},
            labels={f"k{i}": "v" * 200 for i in range(100)},
        )
    )
    assert slack_errors(msg) is None


def test_pagerduty_trigger_and_resolve() -> None:
    rk = "R" * 32
    trig = payloads.pagerduty_event(make_alert(), rk)
    assert pagerduty_errors(trig) == []
    assert trig["event_action"] == "trigger" and trig["dedup_key"] == "a" * 32
    assert trig["payload"]["severity"] == "critical" and trig["links"][0]["href"].startswith("https://")
    res = payloads.pagerduty_event(make_alert("resolved"), rk)
    assert pagerduty_errors(res) == [] and res == {
        "routing_key": rk,
        "event_action": "resolve",
        "dedup_key": "a" * 32,
    }
    odd = payloads.pagerduty_event(make_alert(severity="page-me"), rk)
    assert odd["payload"]["severity"] == "warning" and pagerduty_errors(odd) == []


def test_email_message() -> None:
    alert = make_alert()
    msg = payloads.email_message(alert, "alerts@acme.test", ["oncall@acme.test"], alert.delivery_key("mail"))
    assert msg["Subject"] == "[FIRING] [critical] CPU 93 on d1"
    assert msg["Idempotency-Key"] == alert.delivery_key("mail")
    assert msg["Message-ID"].endswith("@alertpipe>")
    again = payloads.email_message(
        alert, "alerts@acme.test", ["oncall@acme.test"], alert.delivery_key("mail")
    )
    assert again["Message-ID"] == msg["Message-ID"]
    assert "Alert id: " + alert.id in msg.get_content()


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "0.0.0.0",  # noqa: S104 - the address under test
        "::ffff:127.0.0.1",
        "fd00::1",
        "224.0.0.1",
    ],
)
def test_blocked_ranges(addr: str) -> None:
    assert blocked_reason(addr) is not None


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "hooks.example.com"])
def test_public_addresses_pass(addr: str) -> None:
    assert blocked_reason(addr) is None


def test_check_url() -> None:
    closed, private = SsrfPolicy(), SsrfPolicy(allow_private=True)
    with pytest.raises(DeliveryError, match="allowedNetworks") as e:
        check_url("http://169.254.169.254/latest/meta-data", closed)
    assert not e.value.retryable
    with pytest.raises(DeliveryError, match="loopback"):
        check_url("http://localhost:8080/x", closed)
    with pytest.raises(DeliveryError, match="scheme"):
        check_url("ftp://example.com/x", private)
    check_url("http://127.0.0.1:8080/x", private)
    check_url("https://hooks.example.com/x", closed)


def test_records_round_trip() -> None:
    e = AuditEntry(
        "id1", "retry", 123, channel="hook", attempt=2, status_code=503, delay_s=0.4, reason="HTTP 503"
    )
    assert AuditEntry.from_json(e.to_json()) == e
    dl = DeadLetter(
        alert=make_alert().model_dump(mode="json", by_alias=True),
        channel="hook",
        delivery_key="k",
        reason="HTTP 400",
        attempts=1,
        last_status=400,
        last_response="bad",
        first_attempt_ms=1,
        dead_at_ms=2,
        pipeline="prod",
        tenant="acme",
    )
    back = dead_letter_from_json(dl.to_json())
    assert back == dl and back.to_alert().id == "a" * 32
    assert dead_letter_from_json(b'{"reason": "malformed event"}') is None
    assert dead_letter_from_json(b"not json") is None


def _config(**ks) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "tenant": "acme",
            "pipeline": "prod",
            "kafka": {
                "bootstrapServers": "127.0.0.1:9092",
                "topics": {"events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "au"},
            },
            "redis": {"url": "redis://127.0.0.1:6379/0", "keyPrefix": "p"},
            "killSwitches": ks,
        }
    )


def test_kill_switches() -> None:
    now = datetime.now(tz=UTC)
    cfg = _config(stopDelivery={"reason": "incident"}, mutedChannels=[{"name": "hook", "reason": "noisy"}])
    assert is_paused(cfg, now)
    assert is_muted(cfg, "hook", now) == "noisy" and is_muted(cfg, "other", now) is None
    expired = _config(stopDelivery={"reason": "x", "until": (now - timedelta(minutes=1)).isoformat()})
    assert not is_paused(expired, now) and not is_paused(_config(), now)


def test_webhook_body_carries_the_send_time_on_both_paths() -> None:
    alert = make_alert()
    key = alert.delivery_key("hook")
    raw = alert.to_json()
    for body in (payloads.webhook_body(alert, "hook", key, raw, sent_at_ms=1_767_225_600_123),
                 payloads.webhook_body(alert, "hook", key, None, sent_at_ms=1_767_225_600_123)):
        doc = orjson.loads(body)
        assert doc["sentAtMs"] == 1_767_225_600_123
        assert doc["alert"]["id"] == alert.id and doc["idempotencyKey"] == key
    assert "sentAtMs" not in orjson.loads(payloads.webhook_body(alert, "hook", key, raw))
