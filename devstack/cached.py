"""What the devstack cache holds: where each component lives, the stamps saying what was built, and
``missing()``, the components absent or not at their pinned version (devstack.provision makes them)."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from devstack.paths import bin_dir, cache_dir, kafka_home
from devstack.postgres import postgres_bin_dir
from devstack.versions import Versions, load_versions

__all__ = [
    "COMPONENTS", "GO_BINARIES", "KEDA_CRDS", "KWOK_STAGE_SETS", "POM", "go_version_wanted",
    "kafka_cds_archive", "kafka_libs", "kafka_stamp", "keda_crds_dir", "kwok_stages_dir", "missing",
    "promtool", "stamp_ok",
]

HERE = Path(__file__).resolve().parent
POM = HERE / "kafka" / "pom.xml"
GO_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
COMPONENTS = ("redis", "postgres", "kafka", "kafka-cds", "go", "kwok-stages", "keda-crds", "promtool")
KWOK_STAGE_SETS = ("node/fast", "node/heartbeat-with-lease", "pod/general")
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")


def kafka_libs(v: Versions | None = None) -> Path:
    return kafka_home((v or load_versions()).kafka) / "libs"


@functools.lru_cache(maxsize=1)
def _java_id() -> str:
    """Identifies the JVM build (a CDS archive only fits the JVM that wrote it)."""
    java = shutil.which("java")
    if java is None:
        return "none"
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    return hashlib.sha256((os.path.realpath(java) + out.stderr).encode()).hexdigest()[:12]


def kafka_cds_archive(v: Versions | None = None) -> Path:
    """The broker's AppCDS archive for this JVM and these jars (made by provisioning)."""
    v = v or load_versions()
    return kafka_home(v.kafka) / "cds" / f"broker-{_java_id()}-{kafka_stamp(v).split(':')[-1]}.jsa"


def kwok_stages_dir(v: Versions | None = None) -> Path:
    return cache_dir() / f"kwok-stages-{(v or load_versions()).kwok}"


def keda_crds_dir(v: Versions | None = None) -> Path:
    return cache_dir() / f"keda-crds-{(v or load_versions()).keda}"


def promtool() -> Path:
    """Prometheus' promtool (``test rules``, ``check metrics``), built by provisioning."""
    return bin_dir() / "promtool"


def go_version_wanted(name: str, v: Versions) -> str:
    return {
        "etcd": v.etcd,
        "kwok": v.kwok,
        "helm": v.helm,
    }.get(name, v.kubernetes)


def stamp_ok(path: Path, want: str) -> bool:
    try:
        return path.read_text().strip() == want
    except OSError:
        return False


def kafka_stamp(v: Versions) -> str:
    return f"{v.kafka} pom:{hashlib.sha256(POM.read_bytes()).hexdigest()[:12]}"


def missing(v: Versions | None = None) -> list[str]:
    """Components not (or not at the pinned version) in the cache; empty when all are ready."""
    v = v or load_versions()
    out = []
    if shutil.which("redis-server") is None:
        out.append("redis")
    if postgres_bin_dir() is None:
        out.append("postgres")
    if not stamp_ok(kafka_libs(v) / ".stamp", kafka_stamp(v)):
        out.append("kafka")
    elif shutil.which("java") and not kafka_cds_archive(v).exists():
        out.append("kafka-cds")
    for name in GO_BINARIES:
        if not (
            os.access(bin_dir() / name, os.X_OK)
            and stamp_ok(bin_dir() / f".{name}.version", go_version_wanted(name, v))
        ):
            out.append(name)
    if not stamp_ok(kwok_stages_dir(v) / ".stamp", v.kwok):
        out.append("kwok-stages")
    if not stamp_ok(keda_crds_dir(v) / ".stamp", v.keda):
        out.append("keda-crds")
    if not (os.access(promtool(), os.X_OK) and stamp_ok(bin_dir() / ".promtool.version", v.prometheus)):
        out.append("promtool")
    return out


