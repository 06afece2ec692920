"""PII redaction: the pipeline's ``pii.fields`` (event field paths) masked wherever alertpipe writes.

Pure functions and one frozen policy, shared by the evaluator (alerts and dead-lettered events)
and the deliverer (payloads, audit entries, dead letters). A value is *redacted* (``[redacted]``)
or *hashed* (``pii:`` + 16 hex digits of HMAC-SHA256 keyed by tenant/pipeline: the same value
gives the same token, so alerts stay groupable and comparable without showing it; a pseudonym,
not encryption).

Alerts carry the masked text; when some channel opts in (``includePii``) the raw values travel
beside it in the alert's ``pii`` block (what the alerts topic holds), and the deliverer puts them
back for that channel only and strips the block for every other output.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from alertpipe.workers.config import PipelineConfig

__all__ = ["REDACTED", "PiiMode", "PiiPolicy", "normalise_path", "policy_of", "redact_record", "scrub_text"]

REDACTED = "[redacted]"
PiiMode = Literal["redact", "hash"]
_TEMPLATE_PART = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)


def normalise_path(path: str) -> tuple[str, ...]:
    """``$.user.email`` or ``user.email`` -> ("user", "email")."""
    p = path[2:] if path.startswith("$.") else path
    return tuple(p.split("."))


def scrub_text(text: str, raw_values: Iterable[str], mask: Any) -> str:
    """``text`` with every occurrence of a raw value replaced by its mask (longest values first)."""
    for raw in sorted({r for r in raw_values if r}, key=len, reverse=True):
        if raw in text:
            text = text.replace(raw, mask(raw))
    return text


@dataclass(frozen=True)
class PiiPolicy:
    """Which event paths are PII, how they are masked, and whether raw values travel for opt-in channels."""

    fields: tuple[tuple[str, ...], ...]
    mode: PiiMode = "redact"
    salt: bytes = b""
    keep_raw: bool = False
    _rules: dict[str, tuple[Any, tuple[int, ...], dict[str, tuple[tuple[str, ...], ...]]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, fields: Sequence[str], mode: PiiMode, salt: str, keep_raw: bool) -> PiiPolicy:
        return cls(tuple(normalise_path(f) for f in fields), mode, salt.encode(), keep_raw)

    # --- values ---------------------------------------------------------------------------------

    def covers(self, path: Sequence[str]) -> bool:
        """True when ``path`` is a PII field or lies inside one (``user`` covers ``user.email``)."""
        t = tuple(path)
        return any(t[: len(f)] == f for f in self.fields)

    def mask(self, value: Any) -> str:
        if self.mode == "redact":
            return REDACTED
        text = value if isinstance(value, str) else str(value)
        return "pii:" + hmac.new(self.salt, text.encode(), hashlib.sha256).hexdigest()[:16]

    def redact_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``event`` with every PII path masked (copies only the dicts along those paths)."""
        out = dict(event)
        for f in self.fields:
            out, _ = _masked_at(out, f, self)
        return out

    # --- alerts ---------------------------------------------------------------------------------

    def _plan(self, rule: Any) -> tuple[tuple[int, ...], dict[str, tuple[tuple[str, ...], ...]]]:
        """(positions of PII group-by names, PII paths per annotation) of a compiled rule, cached."""
        hit = self._rules.get(rule.name)
        if hit is not None and hit[0] is rule:
            return hit[1], hit[2]
        by = tuple(i for i, n in enumerate(rule.by_names) if self.covers(n.split(".")))
        notes: dict[str, tuple[tuple[str, ...], ...]] = {}
        for k, t in rule.annotations.items():
            paths = tuple(
                tuple(e.split(".")) for e in _TEMPLATE_PART.findall(t.text) if self.covers(e.split("."))
            )
            if paths:
                notes[k] = paths
        self._rules[rule.name] = (rule, by, notes)
        return by, notes

    def apply(self, alert: dict[str, Any], rule: Any, key: Any, ctx: Mapping[str, Any]) -> None:
        """Mask ``alert`` (a dict as the evaluator emits it) in place: group key, group labels and
        annotations that show a PII field; the raw forms go to ``alert["pii"]`` when kept."""
        by, notes = self._plan(rule)
        if not by and not notes:
            return
        raw: dict[str, Any] = {}
        if by:
            # group labels hold each group-by value as rendered into the group key
            names = rule.by_names
            labels = dict(alert["labels"])
            pii_names = [names[i] for i in by]
            raw["groupKey"], raw["labels"] = alert["groupKey"], {n: labels[n] for n in pii_names}
            for n in pii_names:
                labels[n] = self.mask(labels[n])
            alert["groupKey"] = ",".join(f"{n}={labels[n]}" for n in names)
            alert["labels"] = labels
        if notes:
            masked = dict(ctx)
            seen: dict[str, str] = {}
            for p in dict.fromkeys(p for paths in notes.values() for p in paths):  # each path once
                masked, value = _masked_at(masked, p, self)
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    seen[str(value)] = self.mask(value)
            raw["values"] = seen
            annotations = dict(alert["annotations"])
            raw["annotations"] = {}
            for k in notes:
                raw["annotations"][k] = annotations[k]
                annotations[k] = rule.annotations[k].render(masked)
            alert["annotations"] = annotations
        if self.keep_raw:
            alert["pii"] = raw


def _masked_at(ctx: dict[str, Any], path: tuple[str, ...], policy: PiiPolicy) -> tuple[dict[str, Any], Any]:
    """A copy of ``ctx`` with the value at ``path`` masked (the dicts along it copied), and that
    value as it was (None when the path is not there)."""
    out = dict(ctx)
    cur = out
    for i, part in enumerate(path):
        if not isinstance(cur, dict) or part not in cur:
            return out, None
        if i == len(path) - 1:
            value = cur[part]
            cur[part] = policy.mask(value)
            return out, value
        if not isinstance(cur[part], dict):
            return out, None
        cur[part] = dict(cur[part])
        cur = cur[part]
    return out, None


def policy_of(cfg: PipelineConfig) -> PiiPolicy | None:
    """The pipeline's policy (None without ``pii``); raw values kept only if some channel opts in."""
    if cfg.pii is None:
        return None
    keep = any(c.include_pii for c in cfg.channels)
    return PiiPolicy.build(cfg.pii.fields, cfg.pii.mode, f"{cfg.tenant}/{cfg.pipeline}", keep)


def redact_record(value: bytes, policy: PiiPolicy) -> tuple[bytes | None, str]:
    """A dead-lettered event's value with its PII masked, and a note: ``(masked JSON, "")``, or
    ``(None, "sha256:<hex>")`` when it is not a JSON object (its PII cannot be located, so it is
    not kept)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return None, "sha256:" + hashlib.sha256(value).hexdigest()
    return orjson.dumps(policy.redact_event(doc)), ""
