"""examples/ingestor stays valid: the config loads, the key list parses, every example event passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertpipe.workers.config.loaders import parse_config_arg
from alertpipe.workers.ingestor.body import build_batch, parse_body
from alertpipe.workers.ingestor.keys import AuthResult, KeyRing

pytestmark = pytest.mark.unit
EX = Path(__file__).resolve().parents[3] / "examples" / "ingestor"


def test_examples_are_valid() -> None:
    cfg = parse_config_arg(f"file:{EX / 'config.json'}").current()
    assert cfg is not None and cfg.ingest.api_keys_secret_ref is not None
    ring = KeyRing.from_text((EX / "api-keys.txt").read_text())
    auth = ring.authenticate("Bearer example-payments-only-key-0002", cfg.tenant, cfg.pipeline)
    assert auth is AuthResult.OK
    items, lines = parse_body((EX / "events.ndjson").read_bytes(), "application/x-ndjson")
    batch = build_batch(items, lines, cfg.tenant, 1_767_323_045_000)
    assert not batch.rejects and len(batch.records) == 3
