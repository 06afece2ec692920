"""examples/deliverer/ stays valid: the config parses, every secret it names exists, the verifier agrees."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from alertpipe.workers.config import PipelineConfig
from alertpipe.workers.deliverer.payloads import sign
from alertpipe.workers.secrets import SecretResolver

pytestmark = pytest.mark.unit
EX = Path(__file__).resolve().parents[3] / "examples" / "deliverer"


def test_example_config_and_secrets() -> None:
    cfg = PipelineConfig.from_json((EX / "config.json").read_bytes())
    assert {c.kind for c in cfg.channels} == {"webhook", "slack", "pagerduty", "email"}
    resolver = SecretResolver(EX / "secrets")
    refs = []
    for c in cfg.channels:
        for part in (c.webhook, c.slack, c.pagerduty, c.email):
            if part is None:
                continue
            for name in type(part).model_fields:
                if name.endswith("secret_ref") and getattr(part, name) is not None:
                    refs.append(getattr(part, name))
    assert len(refs) == 5
    for ref in refs:
        assert resolver.resolve(ref).get_secret_value()
    for c in cfg.channels:
        assert c.fallback is None or cfg.channel(c.fallback) is not None


def test_example_verifier_matches_the_signer() -> None:
    spec = importlib.util.spec_from_file_location("verify_signature", EX / "verify_signature.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ts = int(time.time())
    body = b'{"alert": {}}'
    assert mod.verify(b"k", str(ts), body, sign(b"k", ts, body))
    assert not mod.verify(b"k", str(ts), body + b"x", sign(b"k", ts, body))
    assert not mod.verify(b"k", str(ts - 3600), body, sign(b"k", ts - 3600, body))
