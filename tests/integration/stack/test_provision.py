"""Provisioning is idempotent and resumable: a half-finished fetch is redone, a finished one reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from devstack.cached import kafka_libs, missing
from devstack.provision import provision

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


def test_a_cache_without_kubectl_builds_only_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache provisioned before kubectl joined the Go binaries: only kubectl is missing (and so the
    Kubernetes build of build-go.sh compiles just cmd/kubectl)."""
    from devstack.cached import GO_BINARIES
    from devstack.versions import load_versions

    monkeypatch.setenv("ALERTPIPE_CACHE", str(tmp_path))
    v = load_versions()
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    wanted = {"etcd": v.etcd, "kwok": v.kwok, "helm": v.helm}
    for name in GO_BINARIES:
        if name != "kubectl":
            (bin_ / name).write_text("#!/bin/sh\n")
            (bin_ / name).chmod(0o755)
            (bin_ / f".{name}.version").write_text(wanted.get(name, v.kubernetes) + "\n")
    assert [n for n in missing() if n in GO_BINARIES] == ["kubectl"]
    (bin_ / "kubectl").write_text("#!/bin/sh\n")
    (bin_ / "kubectl").chmod(0o755)
    (bin_ / ".kubectl.version").write_text("v1.0.0\n")  # an older Kubernetes: rebuilt
    assert [n for n in missing() if n in GO_BINARIES] == ["kubectl"]
    (bin_ / ".kubectl.version").write_text(v.kubernetes + "\n")
    assert not [n for n in missing() if n in GO_BINARIES]
