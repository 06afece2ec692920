"""SMS (Twilio-shaped) and push (FCM HTTP v1-shaped) channels against local receivers speaking those
APIs, on real Kafka and Redis: payloads and auth, fan-out per recipient, rate limits and error codes,
retries without duplicates, refused recipients, dead letters."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.integration.deliverer.conftest import Pipeline, make_alert, running_deliverer
from tests.receivers import wait_until
from tests.receivers.fcm import FcmReceiver, start_fcm_receiver
from tests.receivers.limits import RateLimit
from tests.receivers.twilio import TwilioReceiver, start_twilio_receiver

pytestmark = pytest.mark.integration

SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123"
SENDER = "+15550000001"
NUMBERS = ["+15550001001", "+15550001002", "+15550001003"]
PROJECT = "acme-oncall"
ACCESS_TOKEN = "ya29.test-access-token"
DEVICES = ["fcm-device-token-aaaa", "fcm-device-token-bbbb"]
FAST_RETRY = {"maxAttempts": 12, "maxAge": "30s", "initialBackoff": "50ms", "maxBackoff": "300ms"}
PATIENT = {"maxAttempts": 40, "maxAge": "40s", "initialBackoff": "1s", "maxBackoff": "2s"}


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioReceiver]:
    r = await start_twilio_receiver()
    r.account(SID, AUTH_TOKEN, SENDER)
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def fcm() -> AsyncIterator[FcmReceiver]:
    r = await start_fcm_receiver()
    r.project(PROJECT, ACCESS_TOKEN, *DEVICES)
    try:
        yield r
    finally:
        await r.stop()


def secret(pipeline: Pipeline, name: str, key: str, value: str) -> dict[str, str]:
    (pipeline.secrets_dir / name).mkdir(exist_ok=True)
    (pipeline.secrets_dir / name / key).write_text(value + "\n")
    return {"name": name, "key": key}


def sms(pipeline: Pipeline, twilio: TwilioReceiver, name: str, to: list[str], token: str = AUTH_TOKEN) -> Any:
    ref = secret(pipeline, f"{name}-twilio", "auth-token", token)
    spec = {"accountSid": SID, "authTokenSecretRef": ref, "from": SENDER, "to": to, "url": twilio.url("")}
    return {"name": name, "sms": spec, "retry": FAST_RETRY}


def push(
    pipeline: Pipeline, fcm: FcmReceiver, name: str, tokens: list[str], access: str = ACCESS_TOKEN
) -> Any:
    ref = secret(pipeline, f"{name}-fcm", "access-token", access)
    spec = {"projectId": PROJECT, "accessTokenSecretRef": ref, "tokens": tokens, "url": fcm.url("")}
    return {"name": name, "push": spec, "retry": FAST_RETRY}


async def test_sms_and_push_deliver_firing_and_resolved(
    pipeline: Pipeline, twilio: TwilioReceiver, fcm: FcmReceiver
) -> None:
    pipeline.update(
        channels=[sms(pipeline, twilio, "text", NUMBERS[:2]), push(pipeline, fcm, "phone", DEVICES)]
    )
    firing = make_alert(1, ["text", "phone"])
    resolved = make_alert(1, ["text", "phone"], status="resolved")
    async with running_deliverer(pipeline):
        pipeline.produce([firing, resolved])
        await wait_until(
            lambda: len(twilio.recorder.accepted()) == 4 and len(fcm.recorder.accepted()) == 4,
            60,
            "2 SMS and 2 notifications per transition",
        )

    # SMS: basic auth as the account, a form per recipient, one message each per transition
    for r in twilio.recorder.items:
        assert r.status == 201 and r.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert base64.b64decode(r.headers["Authorization"][6:]).decode() == f"{SID}:{AUTH_TOKEN}"
        assert r.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
        assert parse_qs(r.body.decode())["From"] == [SENDER]
    for n in NUMBERS[:2]:
        assert [b.split("]")[0] for b in twilio.inbox[n]] == ["[FIRING", "[RESOLVED"]
        assert "CPU high on d1" in twilio.inbox[n][0]
    keys = [r.key for r in twilio.recorder.items]
    assert len(set(keys)) == 4 and all(k and k.startswith(firing.id) for k in keys)
    # push: bearer auth, string data, the collapse key of the alert (a resolution replaces the firing)
    for token in DEVICES:
        got = fcm.devices[token]
        assert [m["data"]["status"] for m in got] == ["firing", "resolved"]
        assert all(m["data"]["alertId"] == firing.id for m in got)
        assert got[0]["android"]["collapse_key"] == got[1]["android"]["collapse_key"]
        assert got[0]["android"]["priority"] == "high" and got[1]["android"]["priority"] == "normal"
        assert got[0]["notification"]["title"] == "[FIRING] cpu-high"
    assert all(r.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}" for r in fcm.recorder.items)
    assert twilio.recorder.duplicates() == 0 and fcm.recorder.duplicates() == 0

    delivered = [e for e in pipeline.audit() if e.decision == "delivered"]
    assert sorted((e.channel, e.status, e.status_code) for e in delivered) == [
        ("phone", "firing", 200),
        ("phone", "resolved", 200),
        ("text", "firing", 201),
        ("text", "resolved", 201),
    ]
    assert all(e.reason == "" for e in delivered)
    assert pipeline.committed(pipeline.group()) == 2


async def test_rate_limits_refusals_and_token_rotation(
    pipeline: Pipeline, twilio: TwilioReceiver, fcm: FcmReceiver
) -> None:
    # Twilio allows 4 messages a second on this account: the fan-out meets 429 / 20429 and retries
    # only the recipients not yet sent to; the unsubscribed one is refused, the delivery succeeds.
    twilio.limits[SID] = RateLimit(per_second=4, burst=1)
    twilio.unsubscribed.add(NUMBERS[2])
    # FCM: one message a second for the project (QUOTA_EXCEEDED with Retry-After); one stale token.
    fcm.limits[PROJECT] = RateLimit(per_second=1, burst=1)
    stale = "fcm-device-token-gone"
    pipeline.update(
        channels=[
            sms(pipeline, twilio, "text", NUMBERS),
            push(pipeline, fcm, "phone", [DEVICES[0], stale]),
            # the deliverer caches a secret 10 s: this channel keeps retrying long enough to see the new one
            {**push(pipeline, fcm, "rotated", [DEVICES[1]], access="ya29.expired"), "retry": PATIENT},
        ]
    )
    alert = make_alert(2, ["text", "phone", "rotated"])
    async with running_deliverer(pipeline):
        pipeline.produce([alert])
        await wait_until(lambda: any(r.status == 401 for r in fcm.recorder.items), 30, "a 401 from FCM")
        secret(pipeline, "rotated-fcm", "access-token", ACCESS_TOKEN)  # the refresher writes a new token
        await wait_until(
            lambda: sum(e.decision == "delivered" for e in pipeline.audit()) == 3, 40, "three deliveries"
        )

    assert [len(twilio.inbox[n]) for n in NUMBERS] == [1, 1, 0]
    assert twilio.limits[SID].refused >= 1 and twilio.recorder.duplicates() == 0
    assert len(fcm.devices[DEVICES[0]]) == 1 and len(fcm.devices[DEVICES[1]]) == 1 and not fcm.devices[stale]
    phone = [r for r in fcm.recorder.items if (r.key or "").startswith(alert.delivery_key("phone"))]
    quota = [r for r in phone if r.status == 429]
    assert quota, "FCM never answered QUOTA_EXCEEDED"
    after = [r for r in phone if r.at > quota[0].at]
    assert after and after[0].at - quota[0].at >= 0.95  # Retry-After honoured

    audit = pipeline.audit()
    retries = [e for e in audit if e.decision == "retry"]
    assert any(e.channel == "text" and e.status_code == 429 and "20429" in e.reason for e in retries)
    assert any(
        e.channel == "phone" and e.status_code == 429 and "QUOTA_EXCEEDED" in e.reason for e in retries
    )
    assert any(
        e.channel == "rotated" and e.status_code == 401 and "UNAUTHENTICATED" in e.reason for e in retries
    )
    done = {e.channel: e for e in audit if e.decision == "delivered"}
    assert done["text"].reason == "refused: …1003 (21610 recipient unsubscribed (STOP))"
    assert done["phone"].reason.startswith("refused: fcm-de… (UNREGISTERED")
    assert NUMBERS[2] not in str(audit) and stale not in str(audit)  # masked in the decision log


async def test_permanent_errors_dead_letter(
    pipeline: Pipeline, twilio: TwilioReceiver, fcm: FcmReceiver
) -> None:
    pipeline.update(
        channels=[
            sms(pipeline, twilio, "text", NUMBERS[:1], token="wrong-token"),
            push(pipeline, fcm, "phone", ["never-registered-1", "never-registered-2"]),
        ]
    )
    alert = make_alert(3, ["text", "phone"])
    async with running_deliverer(pipeline):
        pipeline.produce([alert])
        await wait_until(lambda: len(pipeline.dead_letters()) == 2, 60, "two dead letters")
    dead = {d.channel: d for d in pipeline.dead_letters()}
    assert dead["text"].attempts == 1 and dead["text"].last_status == 401
    assert "Twilio 20003: Authenticate" in dead["text"].reason
    assert dead["phone"].attempts == 1 and dead["phone"].last_status == 404
    assert dead["phone"].reason.startswith("every recipient refused: never-… (UNREGISTERED")
    assert not twilio.inbox and not fcm.devices
