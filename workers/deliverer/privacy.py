"""What the deliverer does with an alert's ``pii`` block (see alertpipe.workers.pii).

The evaluator masks spec.pii fields in the alert and, only when some channel opts in
(``includePii``), carries the raw forms beside them. Here: the raw forms go back in for that
channel's payload; every other channel, the dead-letter record and the audit log get the masked
alert, and any text written from a receiver's answer has the raw values masked too.
"""

from __future__ import annotations

from typing import Any

from alertpipe.workers.alerts import Alert
from alertpipe.workers.pii import scrub_text

__all__ = ["for_channel", "scrub", "stored"]


def for_channel(alert: Alert, include_pii: bool) -> Alert:
    """The alert as ``channel`` may see it: raw values restored if it opted in, else masked."""
    raw = alert.pii
    if raw is None:
        return alert
    if not include_pii:
        return alert.model_copy(update={"pii": None})
    return alert.model_copy(
        update={
            "pii": None,
            "group_key": raw.get("groupKey", alert.group_key),
            "labels": {**alert.labels, **raw.get("labels", {})},
            "annotations": {**alert.annotations, **raw.get("annotations", {})},
        }
    )


def stored(alert: Alert) -> dict[str, Any]:
    """The alert as a dead letter keeps it: masked, without the raw block."""
    return alert.model_dump(mode="json", by_alias=True)  # the model never dumps ``pii``


def _pairs(alert: Alert) -> dict[str, str]:
    raw = alert.pii or {}
    out: dict[str, str] = {}
    if "groupKey" in raw:
        out[raw["groupKey"]] = alert.group_key
    for field, masked in (("labels", alert.labels), ("annotations", alert.annotations)):
        for k, v in raw.get(field, {}).items():
            out[str(v)] = masked.get(k, "")
    # each value alone, too (a receiver may echo one without the text around it)
    for k, v in raw.get("labels", {}).items():
        out[str(v)] = alert.labels.get(k, "")
    out.update(raw.get("values", {}))
    return out


def scrub(alert: Alert, text: str) -> str:
    """``text`` (a receiver's answer, a reason) with the alert's raw PII values masked."""
    if alert.pii is None or not text:
        return text
    pairs = _pairs(alert)
    return scrub_text(text, pairs, pairs.__getitem__)
