"""Provisioning is idempotent and resumable: a half-finished fetch is redone, a finished one reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from devstack.provision import kafka_libs, missing, provision

pytestmark = pytest.mark.integration


def test_kafka_fetch_redoes_a_half_finished_one_then_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTPIPE_CACHE", str(tmp_path))
    libs = kafka_libs()
    assert "kafka" in missing()
    half = libs.with_name("libs.tmp")  # what an interrupted maven run leaves behind
    half.mkdir(parents=True)
    (half / "kafka-clients-truncated.jar").write_bytes(b"PK\x03")

    first = provision(("kafka",), console=Console(quiet=True))
    assert [(r.component, r.action) for r in first] == [("kafka", "fetched")]
    assert not half.exists()
    assert not (libs / "kafka-clients-truncated.jar").exists()
    assert any(libs.glob("kafka_2.13-*.jar")) and any(libs.glob("log4j-slf4j-impl-*.jar"))
    assert "kafka" not in missing()

    again = provision(("kafka",), console=Console(quiet=True))
    assert [(r.component, r.action) for r in again] == [("kafka", "reused")]

    (libs / ".stamp").write_text("something else\n")  # pom or version changed: fetched anew
    assert "kafka" in missing()
