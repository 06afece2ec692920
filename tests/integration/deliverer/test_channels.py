"""Each channel's payload as its documented API expects it, against local receivers, on real Kafka/Redis."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.deliverer.conftest import (
    PD_ROUTING_KEY,
    WEBHOOK_SECRET,
    Pipeline,
    make_alert,
    running_deliverer,
    webhook,
)
from tests.receivers import HttpReceiver, Reply, SmtpReceiver, start_smtp_receiver, wait_until
from tests.receivers.http import pagerduty_errors, slack_errors, verify

pytestmark = pytest.mark.integration


async def test_webhook_slack_pagerduty_email(
    pipeline: Pipeline, receiver: HttpReceiver, smtp: SmtpReceiver
) -> None:
    (pipeline.secrets_dir / "slack").mkdir()
    (pipeline.secrets_dir / "slack" / "url").write_text(receiver.url("/slack/T000-B000-XXXX"))
    pipeline.update(
        channels=[
            webhook("hook", receiver.url("/webhook/hook")),
            {"name": "chat", "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}}},
            {
                "name": "pager",
                "pagerduty": {
                    "routingKeySecretRef": {"name": "pd", "key": "routing-key"},
                    "url": receiver.url("/pagerduty/v2/enqueue"),
                },
            },
            {
                "name": "mail",
                "email": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "starttls": False,
                    "from": "alerts@acme.test",
                    "to": ["oncall@acme.test", "sre@acme.test"],
                    "usernameSecretRef": {"name": "smtp", "key": "username"},
                    "passwordSecretRef": {"name": "smtp", "key": "password"},
                },
            },
        ]
    )
    channels = ["hook", "chat", "pager", "mail"]
    firing = make_alert(1, channels, labels={"team": "infra", "link": "https://grafana.example/d/1"})
    resolved = make_alert(1, channels, status="resolved")
    async with running_deliverer(pipeline):
        pipeline.produce([firing, resolved])
        await wait_until(
            lambda: len(receiver.recorder.accepted()) == 6 and len(smtp.messages) == 2,
            60,
            "6 HTTP deliveries and 2 emails",
        )

    rec = receiver.recorder
    # webhook: signed JSON with the idempotency key, signature verifiable with the secret
    hooks = rec.accepted("/webhook/hook")
    assert [h.json["alert"]["status"] for h in hooks] == ["firing", "resolved"]
    for h in hooks:
        assert h.signature_ok is True
        assert verify(WEBHOOK_SECRET.encode(), h.headers, h.body)
        assert not verify(b"wrong", h.headers, h.body)
        assert h.headers["Content-Type"] == "application/json"
        assert h.key == f"{firing.id}:{h.json['alert']['status']}:hook" == h.json["idempotencyKey"]
        assert abs(int(h.headers["X-Alertpipe-Timestamp"]) - time.time()) < 60
    # Slack: valid incoming-webhook messages (Slack answered "ok"), firing then resolved
    chat = rec.accepted("/slack/")
    assert len(chat) == 2 and all(slack_errors(c.json) is None for c in chat)
    assert chat[0].json["blocks"][0]["type"] == "header" and "FIRING" in chat[0].json["text"]
    assert "RESOLVED" in chat[1].json["text"]
    # PagerDuty: trigger then resolve with dedup_key = alert id, 202 success
    pd = rec.accepted("/pagerduty/")
    assert [p.json["event_action"] for p in pd] == ["trigger", "resolve"]
    assert all(p.json["dedup_key"] == firing.id and p.json["routing_key"] == PD_ROUTING_KEY for p in pd)
    assert all(pagerduty_errors(p.json) == [] and p.status == 202 for p in pd)
    assert receiver.pagerduty_incidents[firing.id] == "resolve"
    # email: authenticated, both recipients, subject per transition
    assert smtp.authenticated == ["alertpipe", "alertpipe"]
    assert [m["Subject"].split("]")[0] for m in smtp.messages] == ["[FIRING", "[RESOLVED"]
    assert smtp.envelopes[0] == ("alerts@acme.test", ["oncall@acme.test", "sre@acme.test"])
    assert smtp.messages[0]["Idempotency-Key"] == firing.delivery_key("mail")

    # decision log: received twice, delivered 8 times; offsets committed past both alerts
    audit = pipeline.audit()
    assert sum(e.decision == "received" for e in audit) == 2
    delivered = [e for e in audit if e.decision == "delivered"]
    assert sorted((e.channel, e.status) for e in delivered) == sorted(
        (c, s) for c in channels for s in ("firing", "resolved")
    )
    assert all(e.attempt == 1 and e.latency_ms is not None for e in delivered)
    assert pipeline.committed(pipeline.group()) == 2


def self_signed(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_email_starttls_with_auth_and_pagerduty_429(
    pipeline: Pipeline, receiver: HttpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # the deliverer verifies the server against this CA
    smtp = start_smtp_receiver("alertpipe", "hunter2", tls=(cert, key))
    try:
        pipeline.update(
            channels=[
                {
                    "name": "mail",
                    "email": {
                        "host": "127.0.0.1",
                        "port": smtp.port,
                        "starttls": True,
                        "from": "alerts@acme.test",
                        "to": ["oncall@acme.test"],
                        "usernameSecretRef": {"name": "smtp", "key": "username"},
                        "passwordSecretRef": {"name": "smtp", "key": "password"},
                    },
                },
                {
                    "name": "pager",
                    "pagerduty": {
                        "routingKeySecretRef": {"name": "pd", "key": "routing-key"},
                        "url": receiver.url("/pagerduty/v2/enqueue"),
                    },
                    "retry": {
                        "maxAttempts": 3,
                        "maxAge": "30s",
                        "initialBackoff": "10ms",
                        "maxBackoff": "20ms",
                    },
                },
            ]
        )
        receiver.script("/pagerduty/", [Reply(429, retry_after=1)])
        smtp.refusals.append("451 4.3.0 mailbox busy, try again")
        alert = make_alert(3, ["mail", "pager"])
        async with running_deliverer(pipeline):
            pipeline.produce([alert])
            await wait_until(
                lambda: len(smtp.messages) == 1 and len(receiver.recorder.accepted("/pagerduty/")) == 1,
                30,
                "email over STARTTLS and the PagerDuty event",
            )
        assert smtp.authenticated == ["alertpipe", "alertpipe"]  # one session per attempt (451, then 250)
        pd = receiver.recorder.on("/pagerduty/")
        assert [p.status for p in pd] == [429, 202] and pd[1].at - pd[0].at >= 0.95
        retries = {e.channel: e for e in pipeline.audit() if e.decision == "retry"}
        assert retries["mail"].status_code == 451 and "mailbox busy" in retries["mail"].reason
        assert retries["pager"].status_code == 429 and "retry-after" in retries["pager"].reason
    finally:
        smtp.stop()
