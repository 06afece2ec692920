from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from alertpipe.workers import loops

pytestmark = pytest.mark.unit


def test_asyncio_is_asyncios_own_loop() -> None:
    assert loops.loop_factory("asyncio", "ingestor") is None


def test_uvloop_missing_is_one_line_naming_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> ModuleType:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(SystemExit, match="alertpipe deliverer: --loop uvloop needs the uvloop package"):
        loops.loop_factory("uvloop", "deliverer")
    assert loops.loop_factory("auto", "deliverer") is None  # auto falls back quietly


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ModuleType("uvloop")
    fake.new_event_loop = object  # type: ignore[attr-defined]
    monkeypatch.setattr(importlib, "import_module", lambda name: fake)
    assert loops.loop_factory("auto", "ingestor") is object
    assert loops.loop_factory("uvloop", "ingestor") is object
