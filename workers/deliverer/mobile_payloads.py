"""What the SMS and push channels send and how their APIs' answers are read, as pure functions.

SMS follows Twilio's Messages API (form fields To, From or MessagingServiceSid, Body; errors as JSON
``{"code": 21211, "message": ..., "status": 400}``); push follows FCM HTTP v1 (``{"message": {...}}``,
data values strings only; errors as ``{"error": {"status": "NOT_FOUND", "details": [{"errorCode":
"UNREGISTERED"}]}}``). Every answer becomes a Verdict: sent, refused (this recipient only: a
stale token, an unsubscribed number), or a DeliveryError for the whole channel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

import orjson

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import PushChannel, SmsChannel
from alertpipe.workers.deliverer.payloads import alert_summary
from alertpipe.workers.deliverer.policy import classify_http_status

__all__ = [
    "FCM_ERROR_TYPE",
    "Verdict",
    "fcm_message",
    "fcm_url",
    "fcm_verdict",
    "mask_number",
    "mask_token",
    "sms_form",
    "sms_text",
    "twilio_url",
    "twilio_verdict",
]

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# Twilio codes that concern one recipient only (the others may still get the message).
TWILIO_RECIPIENT_CODES = {
    21211: "invalid To number",
    21408: "region not enabled",
    21610: "recipient unsubscribed (STOP)",
    21612: "To number not reachable from this sender",
    21614: "To number is not a mobile number",
}
# Twilio codes worth a retry whatever the HTTP status says.
TWILIO_RETRY_CODES = {20429, 20500, 20503, 21611, 30001}
# FCM errorCodes that concern one registration token only.
FCM_TOKEN_CODES = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
FCM_RETRY_CODES = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One recipient's outcome: ``sent`` or ``refused`` (with the API's reason); ``error`` concerns
    the channel as a whole (auth, quota, a bad request) and ``retryable`` says whether to try again."""

    outcome: Literal["sent", "refused", "error"]
    detail: str
    status: int
    retryable: bool = False


def mask_number(number: str) -> str:
    """``…4567``: enough to tell recipients apart in the audit log, not enough to dial."""
    return "…" + number[-4:]


def mask_token(token: str) -> str:
    return token[:6] + "…"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state(alert: Alert) -> str:
    return "RESOLVED" if alert.status == "resolved" else "FIRING"


# --- SMS (Twilio) ------------------------------------------------------------------------------


def twilio_url(spec: SmsChannel) -> str:
    return f"{spec.url.rstrip('/')}/2010-04-01/Accounts/{quote(spec.account_sid, safe='')}/Messages.json"


def sms_text(alert: Alert, limit: int) -> str:
    """One line a phone shows whole: state, severity, summary, group; clipped to ``limit``."""
    text = f"[{_state(alert)}] {alert.severity}: {alert_summary(alert)} ({alert.group_key})"
    return _clip(" ".join(text.split()), limit)


def sms_form(spec: SmsChannel, to: str, text: str) -> bytes:
    fields = {"To": to, "Body": text}
    if spec.messaging_service_sid is not None:
        fields["MessagingServiceSid"] = spec.messaging_service_sid
    else:
        assert spec.from_number is not None  # noqa: S101 - the model requires one of them
        fields["From"] = spec.from_number
    return urlencode(fields).encode()


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def twilio_verdict(status: int, text: str) -> Verdict:
    """Read a Messages.json answer: 201 with a Message SID, or an error object with a code."""
    doc = _json(text)
    doc = doc if isinstance(doc, dict) else {}
    verdict = classify_http_status(status)
    if verdict == "delivered":
        return Verdict("sent", f"{doc.get('sid', '?')} {doc.get('status', '')}".strip(), status)
    code = doc.get("code")
    message = " ".join(str(doc.get("message") or text[:200]).split())
    detail = f"HTTP {status}: Twilio {code}: {message}" if code is not None else f"HTTP {status}: {message}"
    if isinstance(code, int) and code in TWILIO_RECIPIENT_CODES:
        return Verdict("refused", f"{code} {TWILIO_RECIPIENT_CODES[code]}", status)
    retry = verdict == "retry" or (isinstance(code, int) and code in TWILIO_RETRY_CODES)
    return Verdict("error", detail, status, retryable=retry)


# --- push (FCM HTTP v1) ------------------------------------------------------------------------


def fcm_url(spec: PushChannel) -> str:
    return f"{spec.url.rstrip('/')}/v1/projects/{quote(spec.project_id, safe='')}/messages:send"


def fcm_message(alert: Alert, spec: PushChannel, token: str | None, delivery_key: str) -> dict[str, Any]:
    """A ``messages:send`` body: notification title/body, string-only data, collapse keys = alert id.

    The collapse keys make the device show a repeat (and the resolution) in place of the earlier
    notification, so a duplicate after a crash replaces rather than adds.
    """
    critical = alert.severity == "critical" and alert.status != "resolved"
    collapse = hashlib.sha256(alert.id.encode()).hexdigest()[:32]
    data = {
        "alertId": alert.id,
        "status": alert.status,
        "severity": alert.severity,
        "rule": alert.rule,
        "groupKey": alert.group_key,
        "tenant": alert.tenant,
        "pipeline": alert.pipeline,
        "idempotencyKey": delivery_key,
    }
    message: dict[str, Any] = {
        "notification": {
            "title": _clip(f"[{_state(alert)}] {alert.rule}", 100),
            "body": _clip(alert_summary(alert), 1000),
        },
        "data": data,
        "android": {"priority": "high" if critical else "normal", "collapse_key": collapse},
        "apns": {"headers": {"apns-collapse-id": collapse, "apns-priority": "10" if critical else "5"}},
    }
    if token is not None:
        message["token"] = token
    else:
        message["topic"] = spec.topic
    return {"message": message}


def fcm_verdict(status: int, text: str) -> Verdict:
    """Read a ``messages:send`` answer: 200 ``{"name": ...}`` or a google.rpc error with an FcmError.

    401 (an expired access token) is retried: the token is looked up again on every attempt, so
    a refresher that rotates the Secret heals it within the retry budget.
    """
    doc = _json(text)
    if 200 <= status < 300:
        name = doc.get("name", "?") if isinstance(doc, dict) else "?"
        return Verdict("sent", str(name), status)
    err = doc.get("error") if isinstance(doc, dict) else None
    err = err if isinstance(err, dict) else {}
    code = next(
        (
            d.get("errorCode")
            for d in err.get("details", [])
            if isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE
        ),
        None,
    )
    reason = code or err.get("status") or f"HTTP {status}"
    message = " ".join(str(err.get("message") or text[:200]).split())
    if code in FCM_TOKEN_CODES:
        return Verdict("refused", f"{code}: {message}", status)
    retry = code in FCM_RETRY_CODES or status == 401 or classify_http_status(status) == "retry"
    return Verdict("error", f"HTTP {status}: FCM {reason}: {message}", status, retryable=retry)
