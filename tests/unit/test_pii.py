"""spec.pii as pure functions: masking, events, alerts through the engine, what the deliverer sends."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from alertpipe.workers.alerts import Alert
from alertpipe.workers.config import PipelineConfig, RuleSpec
from alertpipe.workers.deliverer import privacy
from alertpipe.workers.pii import REDACTED, PiiPolicy, policy_of, redact_record, scrub_text
from alertpipe.workers.rules import compile_rule
from alertpipe.workers.rules.engine import Engine, EngineSettings
from tests.unit.deliverer.test_payloads import _config

pytestmark = pytest.mark.unit

EMAIL, PHONE = "bob@example.org", "+15550001234"


def config(**extra: Any) -> PipelineConfig:
    base = _config().model_dump(mode="json", by_alias=True)
    return PipelineConfig.model_validate({**base, "pipeline": "main", **extra})


def test_policy_of_the_config() -> None:
    assert policy_of(config()) is None
    pii = {"fields": ["email", "$.user.phone"], "mode": "hash"}
    p = policy_of(config(pii=pii))
    assert p is not None and p.fields == (("email",), ("user", "phone")) and not p.keep_raw
    hook = {"name": "h", "webhook": {"url": "http://x"}, "includePii": True}
    kept = policy_of(config(pii=pii, channels=[hook]))
    assert kept is not None and kept.keep_raw
    with pytest.raises(ValidationError, match="fields.0"):
        config(pii={"fields": ["user..phone"]})


def test_masks_and_events() -> None:
    hashed = PiiPolicy.build(["email", "user"], "hash", "acme/main", False)
    token = hashed.mask(EMAIL)
    assert token.startswith("pii:") and len(token) == 20 and token == hashed.mask(EMAIL)
    assert token != PiiPolicy.build(["email"], "hash", "acme/other", False).mask(EMAIL)  # salted per pipeline
    event = {"email": EMAIL, "user": {"phone": PHONE}, "value": 3}
    masked = hashed.redact_event(event)
    assert masked == {"email": token, "user": hashed.mask({"phone": PHONE}), "value": 3}
    assert event["email"] == EMAIL  # the input is not changed
    red = PiiPolicy.build(["user.phone", "missing.path"], "redact", "", False)
    assert red.redact_event(event) == {"email": EMAIL, "user": {"phone": REDACTED}, "value": 3}
    doc, note = redact_record(b'{"user": {"phone": "+1555"}}', red)
    assert doc == b'{"user":{"phone":"[redacted]"}}' and note == ""
    doc, note = redact_record(b"not json +1555", red)
    assert doc is None and note.startswith("sha256:")
    assert scrub_text(f"to {EMAIL} and {EMAIL}!", [EMAIL], lambda r: "X") == "to X and X!"


def alerts(policy: PiiPolicy | None) -> list[dict[str, Any]]:
    spec = RuleSpec.model_validate(
        {
            "by": ["deviceId", "email"],
            "threshold": {"condition": "value > 80"},
            "annotations": {
                "summary": "{{ value }} for {{ email }} ({{ user.phone }})",
                "plain": "{{ value }}",
                "who": "{{ email }}",
            },
        }
    )
    engine = Engine(
        EngineSettings("acme", "main", 0, pii=policy), [compile_rule("hot", spec)], clock=lambda: 0.0
    )
    part = engine.partition(0)
    for seq, value in enumerate((90, 20)):
        event = {
            "tenant": "acme",
            "deviceId": "d1",
            "seq": seq,
            "ts": 1000 + seq,
            "type": "t",
            "value": value,
            "email": EMAIL,
            "user": {"phone": PHONE},
        }
        part.offer(event, "d1", seq, 1000 + seq)
    part.advance_to(10_000)
    return part.take_alerts()


def test_alerts_show_masks_and_carry_raw_only_when_kept() -> None:
    plain = alerts(None)
    assert plain[0]["groupKey"] == f"deviceId=d1,email={EMAIL}" and "pii" not in plain[0]
    policy = PiiPolicy.build(["email", "user.phone"], "hash", "acme/main", keep_raw=True)
    firing, resolved = alerts(policy)
    token, phone = policy.mask(EMAIL), policy.mask(PHONE)
    assert firing["id"] == plain[0]["id"]  # the id hashes the raw group: replays and dedup unchanged
    assert firing["groupKey"] == f"deviceId=d1,email={token}" and firing["labels"]["email"] == token
    # a field used by two annotations is masked once (not a hash of its hash)
    assert firing["annotations"] == {"summary": f"90 for {token} ({phone})", "plain": "90", "who": token}
    assert firing["pii"] == {
        "groupKey": f"deviceId=d1,email={EMAIL}",
        "labels": {"email": EMAIL},
        "annotations": {"summary": f"90 for {EMAIL} ({PHONE})", "who": EMAIL},
        "values": {EMAIL: token, PHONE: phone},
    }
    assert resolved["status"] == "resolved" and resolved["labels"]["email"] == token
    dropped = alerts(PiiPolicy.build(["email", "user.phone"], "redact", "", keep_raw=False))
    assert (
        "pii" not in dropped[0] and dropped[0]["annotations"]["summary"] == "90 for [redacted] ([redacted])"
    )


def test_the_deliverer_restores_raw_for_the_opted_in_channel_only() -> None:
    policy = PiiPolicy.build(["email", "user.phone"], "hash", "acme/main", keep_raw=True)
    alert = Alert.model_validate({**alerts(policy)[0], "channels": ["a", "b"]})
    assert alert.pii is not None
    assert b'"pii":' not in alert.to_json() and EMAIL not in alert.to_json().decode()
    masked, raw = privacy.for_channel(alert, False), privacy.for_channel(alert, True)
    assert masked.pii is None and EMAIL not in masked.to_json().decode()
    assert raw.group_key == f"deviceId=d1,email={EMAIL}" and raw.labels["email"] == EMAIL
    assert PHONE in raw.annotations["summary"]
    assert EMAIL not in str(privacy.stored(alert))
    scrubbed = privacy.scrub(alert, f"HTTP 400: unknown {EMAIL}, call {PHONE}")
    assert scrubbed == f"HTTP 400: unknown {policy.mask(EMAIL)}, call {policy.mask(PHONE)}"
