"""What each channel receives, built as pure functions: webhook body and signature, Slack blocks,
PagerDuty Events API v2 events, and the email message.

Shapes follow the receivers' documented APIs (Slack Block Kit limits, PagerDuty's required
``payload`` fields and severities); the signature is HMAC-SHA256 over ``timestamp + "." + body``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import orjson

from alertpipe.workers.alerts import Alert

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "alert_link",
    "alert_summary",
    "email_message",
    "pagerduty_event",
    "sign",
    "slack_message",
    "verify_signature",
    "webhook_body",
]

SIGNATURE_HEADER = "X-Alertpipe-Signature"
TIMESTAMP_HEADER = "X-Alertpipe-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SIG_PREFIX = "v1="
_LINK_KEYS = ("link", "url", "runbook_url", "runbookUrl", "dashboard")
_PD_SEVERITIES = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def alert_summary(alert: Alert) -> str:
    """The annotation ``summary`` if the rule has one, else ``rule on group``."""
    return alert.annotations.get("summary") or f"{alert.rule} on {alert.group_key}"


def alert_link(alert: Alert) -> str | None:
    for key in _LINK_KEYS:
        value = alert.annotations.get(key) or alert.labels.get(key)
        if value and value.startswith(("http://", "https://")):
            return value
    return None


# --- webhook -----------------------------------------------------------------------------------


def webhook_body(
    alert: Alert, channel: str, delivery_key: str, raw: bytes | None = None, sent_at_ms: int | None = None
) -> bytes:
    """The JSON a webhook receives: a small envelope around the alert as the evaluator wrote it.

    ``raw`` is the alert's JSON as read from the topic (already validated); embedding it as is
    saves a model dump per delivery on the hot path. ``sentAtMs`` (this attempt's wall clock)
    completes the alert's own stamps (``ingestTimeMs``, ``processedAtMs``) for per-hop latency.
    """
    env: dict[str, Any] = {"version": 1, "channel": channel, "idempotencyKey": delivery_key}
    if sent_at_ms is not None:
        env["sentAtMs"] = sent_at_ms
    if raw is not None and raw[:1] == b"{":
        head = orjson.dumps(env)
        return head[:-1] + b',"alert":' + raw + b"}"
    return orjson.dumps({**env, "alert": alert.model_dump(mode="json", by_alias=True)})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return _SIG_PREFIX + mac


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale timestamps."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if now is not None and abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


# --- Slack -------------------------------------------------------------------------------------

_SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}


def slack_message(alert: Alert) -> dict[str, Any]:
    """An incoming-webhook message: header, summary, fields (severity, status, rule, group), labels, link.

    Incoming webhooks cannot edit an earlier message, so a resolution is a new message marked
    RESOLVED. Limits from Block Kit: header 150 chars, section text 3000, at most 10 fields.
    """
    resolved = alert.status == "resolved"
    icon = ":white_check_mark:" if resolved else _SEVERITY_EMOJI.get(alert.severity, ":warning:")
    state = "RESOLVED" if resolved else "FIRING"
    summary = alert_summary(alert)
    title = _clip(f"[{state}] {alert.rule}", 150)
    fields = [
        {"type": "mrkdwn", "text": f"*Severity*\n{alert.severity}"},
        {"type": "mrkdwn", "text": f"*Status*\n{alert.status}"},
        {"type": "mrkdwn", "text": _clip(f"*Group*\n{alert.group_key}", 2000)},
        {"type": "mrkdwn", "text": f"*Started*\n{_iso(alert.starts_at_ms)}"},
    ]
    if resolved and alert.ends_at_ms is not None:
        fields.append({"type": "mrkdwn", "text": f"*Resolved*\n{_iso(alert.ends_at_ms)}"})
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"{icon} {summary}", 3000)}},
        {"type": "section", "fields": fields[:10]},
    ]
    if alert.labels:
        labels = ", ".join(f"`{k}={v}`" for k, v in sorted(alert.labels.items()))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(labels, 3000)}]})
    link = alert_link(alert)
    if link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"<{link}|Open>", 3000)}})
    return {"text": _clip(f"[{state}] {alert.severity}: {summary}", 3000), "blocks": blocks}


# --- PagerDuty ---------------------------------------------------------------------------------


def pagerduty_event(alert: Alert, routing_key: str) -> dict[str, Any]:
    """Events API v2: ``trigger`` with a full payload, ``resolve`` with the same dedup_key (alert id)."""
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.id}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.id,
        "client": "alertpipe",
        "payload": {
            "summary": _clip(alert_summary(alert), 1024),
            "source": _clip(alert.group_key or alert.pipeline, 255),
            "severity": _PD_SEVERITIES.get(alert.severity, "warning"),
            "timestamp": _iso(alert.starts_at_ms),
            "component": alert.labels.get("component", alert.pipeline),
            "group": alert.tenant,
            "class": alert.rule,
            "custom_details": {
                "labels": alert.labels,
                "annotations": alert.annotations,
                "values": alert.values,
                "pipeline": alert.pipeline,
                "alertId": alert.id,
            },
        },
    }
    link = alert_link(alert)
    if link:
        event["links"] = [{"href": link, "text": "Details"}]
    return event


# --- email -------------------------------------------------------------------------------------


def email_message(alert: Alert, sender: str, recipients: list[str], delivery_key: str) -> EmailMessage:
    """A plain-text email; Message-ID derives from the delivery key so a repeat is recognisable."""
    state = "RESOLVED" if alert.status == "resolved" else "FIRING"
    msg = EmailMessage()
    msg["Subject"] = _clip(f"[{state}] [{alert.severity}] {alert_summary(alert)}", 200).replace("\n", " ")
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Message-ID"] = f"<{hashlib.sha256(delivery_key.encode()).hexdigest()[:40]}@alertpipe>"
    msg["X-Alertpipe-Alert-Id"] = alert.id
    msg[IDEMPOTENCY_HEADER] = delivery_key
    lines = [
        alert_summary(alert),
        "",
        f"Status:   {alert.status}",
        f"Severity: {alert.severity}",
        f"Rule:     {alert.rule} (pipeline {alert.pipeline}, tenant {alert.tenant})",
        f"Group:    {alert.group_key}",
        f"Started:  {_iso(alert.starts_at_ms)}",
    ]
    if alert.ends_at_ms is not None:
        lines.append(f"Resolved: {_iso(alert.ends_at_ms)}")
    if alert.labels:
        lines += ["", "Labels:"] + [f"  {k}={v}" for k, v in sorted(alert.labels.items())]
    if alert.values:
        lines += ["", "Values:"] + [f"  {k}={v}" for k, v in sorted(alert.values.items())]
    link = alert_link(alert)
    if link:
        lines += ["", link]
    lines += ["", f"Alert id: {alert.id}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg
