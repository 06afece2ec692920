"""SMS and push: the channel models, the payloads, how the APIs' answers are read, and the fan-out."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
from pydantic import ValidationError

from alertpipe.operator.decisions.workloads import secret_refs
from alertpipe.workers.config import ChannelSpec, SecretKeyRef
from alertpipe.workers.deliverer import mobile_payloads as mp
from alertpipe.workers.deliverer.mobile import MobileSenders
from alertpipe.workers.errors import DeliveryError
from tests.unit.deliverer.test_payloads import make_alert
from tests.unit.operator.test_decisions import pipeline_spec

pytestmark = pytest.mark.unit

SID = "AC" + "ab" * 16
REF = {"name": "t", "key": "k"}


def sms_channel(**kw: Any) -> ChannelSpec:
    spec = {"accountSid": SID, "authTokenSecretRef": REF, "from": "+15550000001", "to": ["+15550001001"]}
    return ChannelSpec.model_validate({"name": "text", "sms": {**spec, **kw}})


def push_channel(**kw: Any) -> ChannelSpec:
    spec = {"projectId": "acme-oncall", "accessTokenSecretRef": REF, "tokens": ["tok-a"]}
    return ChannelSpec.model_validate({"name": "phone", "push": {**spec, **kw}})


@pytest.mark.parametrize(
    ("make", "change", "message"),
    [
        (sms_channel, {"accountSid": "AC123"}, "accountSid"),
        (sms_channel, {"to": ["5550001001"]}, "to.0"),
        (sms_channel, {"to": []}, "to"),
        (sms_channel, {"messagingServiceSid": "MG" + "0" * 32}, "exactly one of from, messagingServiceSid"),
        (sms_channel, {"from": None}, "exactly one of from, messagingServiceSid"),
        (push_channel, {"topic": "alerts"}, "exactly one of tokens, topic"),
        (push_channel, {"tokens": []}, "exactly one of tokens, topic"),
        (push_channel, {"projectId": "Acme"}, "projectId"),
    ],
)
def test_channel_models_refuse_what_the_apis_would(make: Any, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**change)


def test_channel_kinds() -> None:
    assert sms_channel().kind == "sms" and push_channel().kind == "push"
    with pytest.raises(ValidationError, match="exactly one of webhook, slack, pagerduty, email, sms, push"):
        ChannelSpec.model_validate({"name": "x"})


def test_sms_request() -> None:
    spec = sms_channel(url="http://127.0.0.1:9/").sms
    assert spec is not None
    assert mp.twilio_url(spec) == f"http://127.0.0.1:9/2010-04-01/Accounts/{SID}/Messages.json"
    alert = make_alert(channels=["text"], annotations={"summary": "CPU\nhigh " + "x" * 400})
    text = mp.sms_text(alert, 320)
    assert len(text) == 320 and text.startswith("[FIRING] critical: CPU high x") and text.endswith("…")
    form = parse_qs(mp.sms_form(spec, "+15550001001", "hi & bye").decode())
    assert form == {"To": ["+15550001001"], "From": ["+15550000001"], "Body": ["hi & bye"]}
    service = sms_channel(**{"from": None, "messagingServiceSid": "MG" + "1" * 32}).sms
    assert service is not None
    assert parse_qs(mp.sms_form(service, "+15550001001", "x").decode())["MessagingServiceSid"] == [
        "MG" + "1" * 32
    ]


def test_push_message() -> None:
    spec = push_channel().push
    assert spec is not None
    firing, resolved = make_alert(channels=["phone"]), make_alert("resolved", channels=["phone"])
    m = mp.fcm_message(firing, spec, "tok-a", "k1")["message"]
    r = mp.fcm_message(resolved, spec, "tok-a", "k2")["message"]
    assert m["token"] == "tok-a" and "topic" not in m
    assert all(isinstance(v, str) for v in m["data"].values())
    assert m["data"]["idempotencyKey"] == "k1" and m["data"]["alertId"] == firing.id
    assert (
        m["android"]["collapse_key"]
        == r["android"]["collapse_key"]
        == m["apns"]["headers"]["apns-collapse-id"]
    )
    assert (m["android"]["priority"], r["android"]["priority"]) == ("high", "normal")
    assert (
        m["notification"]["title"] == "[FIRING] cpu-high"
        and r["notification"]["title"] == "[RESOLVED] cpu-high"
    )
    topic = push_channel(tokens=[], topic="oncall").push
    assert topic is not None
    assert mp.fcm_message(firing, topic, None, "k")["message"]["topic"] == "oncall"
    assert mp.fcm_url(spec) == "https://fcm.googleapis.com/v1/projects/acme-oncall/messages:send"


def twilio_error(code: int, status: int = 400) -> str:
    return orjson.dumps({"code": code, "message": f"m{code}", "status": status}).decode()


@pytest.mark.parametrize(
    ("status", "body", "outcome", "retryable"),
    [
        (201, '{"sid": "SM1", "status": "queued"}', "sent", False),
        (400, twilio_error(21211), "refused", False),
        (400, twilio_error(21610), "refused", False),
        (400, twilio_error(21606), "error", False),
        (401, twilio_error(20003, 401), "error", False),
        (429, twilio_error(20429, 429), "error", True),
        (400, twilio_error(21611), "error", True),  # the sender's queue is full: later
        (503, "<html>down</html>", "error", True),
    ],
)
def test_twilio_verdict(status: int, body: str, outcome: str, retryable: bool) -> None:
    v = mp.twilio_verdict(status, body)
    assert (v.outcome, v.retryable, v.status) == (outcome, retryable, status)


def fcm_error(status: int, state: str, code: str | None = None) -> str:
    err: dict[str, Any] = {"code": status, "message": "m", "status": state}
    if code:
        err["details"] = [{"@type": mp.FCM_ERROR_TYPE, "errorCode": code}]
    return orjson.dumps({"error": err}).decode()


@pytest.mark.parametrize(
    ("status", "body", "outcome", "retryable"),
    [
        (200, '{"name": "projects/p/messages/1"}', "sent", False),
        (404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"), "refused", False),
        (403, fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), "refused", False),
        (400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), "error", False),
        (401, fcm_error(401, "UNAUTHENTICATED"), "error", True),
        (403, fcm_error(403, "PERMISSION_DENIED"), "error", False),
        (429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), "error", True),
        (503, fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), "error", True),
        (502, "bad gateway", "error", True),
    ],
)
def test_fcm_verdict(status: int, body: str, outcome: str, retryable: bool) -> None:
    v = mp.fcm_verdict(status, body)
    assert (v.outcome, v.retryable, v.status) == (outcome, retryable, status)


class Api:
    """Answers per recipient from a script; records what was asked."""

    def __init__(self, answers: dict[str, list[tuple[int, str, str | None]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, dict[str, str], str]] = []

    async def __call__(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float, ctype: str
    ) -> tuple[int, str, str | None]:
        form = ctype.startswith("application/x-www")
        to = parse_qs(body.decode())["To"][0] if form else orjson.loads(body)["message"]["token"]
        self.asked.append((to, url, headers, ctype))
        return self.answers[to].pop(0)


def secret(ref: SecretKeyRef, what: str) -> str:
    return "s3cret"


OK = (201, '{"sid": "SM1", "status": "queued"}', None)
SLOW = (429, twilio_error(20429, 429), "2")


async def test_fan_out_retries_only_the_rest_and_folds_refusals() -> None:
    numbers = ["+15550001001", "+15550001002", "+15550001003"]
    api = Api({numbers[0]: [OK], numbers[1]: [SLOW, OK], numbers[2]: [(400, twilio_error(21610), None)]})
    senders = MobileSenders(api, secret)
    ch, alert = sms_channel(to=numbers), make_alert(channels=["text"])
    with pytest.raises(DeliveryError) as exc:
        await senders.send_sms(alert, ch, "key")
    assert exc.value.retryable and exc.value.status == 429 and exc.value.retry_after == 2.0
    assert "(1/3 recipients done)" in exc.value.reason
    status, detail, note = await senders.send_sms(alert, ch, "key")
    assert [a[0] for a in api.asked] == [
        numbers[0],
        numbers[1],
        numbers[1],
        numbers[2],
    ]  # no repeat to the first
    assert (status, detail) == (201, "sent to 2/3 (SM1 queued)")
    assert note == "refused: …1003 (21610 recipient unsubscribed (STOP))"
    keys = {a[2]["Idempotency-Key"] for a in api.asked}
    assert len(keys) == 3 and all(k.startswith("key/") for k in keys)
    assert api.asked[0][2]["Authorization"] == "Basic " + base64.b64encode(f"{SID}:s3cret".encode()).decode()


async def test_fan_out_all_refused_is_permanent() -> None:
    gone = (404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"), None)
    api = Api({"tok-a": [gone], "tok-b": [gone]})
    with pytest.raises(DeliveryError) as exc:
        await MobileSenders(api, secret).send_push(
            make_alert(channels=["phone"]), push_channel(tokens=["tok-a", "tok-b"]), "k"
        )
    assert not exc.value.retryable and exc.value.status == 404
    assert (
        exc.value.reason.startswith("every recipient refused: tok-a… (UNREGISTERED")
        and "tok-b…" in exc.value.reason
    )
    assert api.asked[0][2]["Authorization"] == "Bearer s3cret" and api.asked[0][3] == "application/json"


def test_the_deliverer_alone_gets_the_sms_and_push_secrets() -> None:
    twilio = {"name": "twilio", "key": "token"}
    fcm = {"name": "fcm", "key": "access"}
    spec = pipeline_spec(
        channels=[
            {
                "name": "text",
                "sms": {**sms_channel().model_dump(by_alias=True)["sms"], "authTokenSecretRef": twilio},
            },
            {
                "name": "phone",
                "push": {**push_channel().model_dump(by_alias=True)["push"], "accessTokenSecretRef": fcm},
            },
        ]
    )
    names = {r.name for r in secret_refs(spec, "deliverer")}
    assert {"twilio", "fcm"} <= names
    assert not {"twilio", "fcm"} & {
        r.name for r in secret_refs(spec, "ingestor") + secret_refs(spec, "evaluator")
    }
