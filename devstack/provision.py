"""Provisioning: fetch or build every devstack component once into the cache ($ALERTPIPE_CACHE).

Idempotent and resumable (what is there already: devstack.cached). Each component is produced
under a temporary name and moved into place with a stamp recording what was built (version, and
for Kafka the pom's hash); a finished component whose stamp matches is reused, a half-finished one
is redone. One file lock serialises provisioning runs that share a cache (two test sessions
starting at once build nothing twice).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from devstack.cached import (
    COMPONENTS,
    GO_BINARIES,
    KEDA_CRDS,
    KWOK_STAGE_SETS,
    POM,
    kafka_cds_archive,
    kafka_libs,
    kafka_stamp,
    keda_crds_dir,
    kwok_stages_dir,
    missing,
    promtool,
    stamp_ok,
)
from devstack.paths import bin_dir, cache_dir
from devstack.postgres import postgres_bin_dir
from devstack.versions import Versions, load_versions

__all__ = ["ProvisionError", "StepResult", "provision"]  # what is in the cache: devstack.cached

BUILD_GO = Path(__file__).resolve().parent / "scripts" / "build-go.sh"


class ProvisionError(RuntimeError):
    """A component could not be provisioned; the message says which, the command, and its output tail."""


@dataclass(frozen=True)
class StepResult:
    component: str
    action: str  # "reused" | "built" | "installed" | "fetched"
    seconds: float
    detail: str = ""


def _run(cmd: list[str], what: str, log: Path, env: dict[str, str] | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"\n==== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ProvisionError(f"{what}: `{' '.join(cmd[:3])} ...` exited {rc} (full log {log}):\n{tail}")


def _sudo() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-n"]
    raise ProvisionError("apt-get needs root: run as root or install sudo")


def _apt_install(package: str, log: Path) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run([*_sudo(), "apt-get", "update", "-q"], "apt-get update", log, env)
    _run(
        [*_sudo(), "apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        f"install {package}",
        log,
        env,
    )


def provision_redis(v: Versions, log: Path) -> str:
    if shutil.which("redis-server"):
        return "reused"
    _apt_install("redis-server", log)
    if shutil.which("redis-server") is None:
        raise ProvisionError("redis: apt-get installed redis-server but it is not on PATH")
    return "installed"


def provision_postgres(v: Versions, log: Path) -> str:
    """The notification history's database: Debian's postgresql (server binaries under /usr/lib)."""
    if postgres_bin_dir() is not None:
        return "reused"
    _apt_install("postgresql", log)
    if postgres_bin_dir() is None:
        raise ProvisionError("postgres: installed postgresql, yet no initdb under /usr/lib/postgresql")
    return "installed"


def provision_kafka_cds(v: Versions, log: Path) -> str:
    """Run the broker once with -XX:ArchiveClassesAtExit: the next starts map its classes pre-parsed."""
    from devstack.kafka import KafkaServer, exercise

    archive = kafka_cds_archive(v)
    if archive.exists():
        return "reused"
    if not stamp_ok(kafka_libs(v) / ".stamp", kafka_stamp(v)):
        raise ProvisionError("kafka-cds: provision kafka first (the archive is made from its jars)")
    archive.parent.mkdir(parents=True, exist_ok=True)
    for old in archive.parent.glob("*.jsa"):  # other JVMs' or jars' archives are of no use now
        old.unlink()
    tmp = archive.with_suffix(".tmp")
    with tempfile.TemporaryDirectory(prefix="kafka-cds-") as d:
        broker = KafkaServer(kafka_libs(v), Path(d), cds_dump=tmp, jit="fast")
        try:
            broker.start()
            exercise(broker.bootstrap)  # the classes of topic creation, produce and fetch, too
        finally:
            broker.stop()
    if not tmp.exists():
        raise ProvisionError(f"kafka: the JVM wrote no CDS archive at {tmp}")
    os.rename(tmp, archive)
    return "built"


def provision_kafka(v: Versions, log: Path) -> str:
    libs = kafka_libs(v)
    want = kafka_stamp(v)
    if stamp_ok(libs / ".stamp", want):
        return "reused"
    if shutil.which("java") is None:  # Kafka 4 needs Java 17+
        _apt_install("openjdk-17-jre-headless", log)
    if shutil.which("mvn") is None:
        _apt_install("maven", log)
    tmp = libs.with_name("libs.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a half-finished fetch is redone, never trusted
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={v.kafka}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        "kafka: fetch broker jars with maven",
        log,
    )
    if not any(tmp.glob("kafka_2.13-*.jar")):
        raise ProvisionError(f"kafka: maven finished but {tmp} has no kafka_2.13 jar")
    (tmp / ".stamp").write_text(want + "\n")
    if libs.exists():  # a running broker keeps its open jars; the old folder goes after the swap
        old = libs.with_name(f"libs.old.{os.getpid()}")
        os.rename(libs, old)
        os.rename(tmp, libs)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, libs)
    return "fetched"


def provision_go(v: Versions, log: Path) -> str:
    if shutil.which("openssl") is None:  # the control plane's service-account key pair
        _apt_install("openssl", log)
    todo = [n for n in missing(v) if n in GO_BINARIES]
    if not todo:
        return "reused"
    if shutil.which("go") is None:
        raise ProvisionError(
            "go binaries: `go` not found on PATH: install a Go toolchain >= 1.26 first"
            " (a prerequisite named in the README), then run provisioning again"
        )
    env = {**os.environ, "ALERTPIPE_CACHE": str(cache_dir())}
    _run(["bash", str(BUILD_GO), "all"], f"build {', '.join(todo)}", log, env)
    still = [n for n in missing(v) if n in GO_BINARIES]
    if still:
        raise ProvisionError(f"go binaries: build-go.sh finished but {', '.join(still)} are missing")
    return "built"


def provision_kwok_stages(v: Versions, log: Path) -> str:
    """Copy kwok's Stage definitions (node and pod lifecycles) from its module source into the cache."""
    dest = kwok_stages_dir(v)
    if stamp_ok(dest / ".stamp", v.kwok):
        return "reused"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{v.kwok}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cache_dir(),
        check=False,
    )
    if out.returncode != 0:
        raise ProvisionError(f"kwok stages: go mod download failed: {out.stderr.strip()[-500:]}")
    src = Path(json.loads(out.stdout)["Dir"]) / "kustomize" / "stage"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    docs = []
    for rel in KWOK_STAGE_SETS:
        for f in sorted((src / rel).glob("*.yaml")):
            if f.name != "kustomization.yaml":
                origin = f"sigs.k8s.io/kwok@{v.kwok}/kustomize/stage/{rel}/{f.name}"
                docs.append(f"# from {origin}\n{f.read_text().strip()}\n")
    if not docs:
        raise ProvisionError(f"kwok stages: none found under {src}")
    (tmp / "stages.yaml").write_text("---\n".join(docs))
    (tmp / ".stamp").write_text(v.kwok + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return "built"


def _go_module_dir(module: str, what: str) -> Path:
    """The source folder of a Go module version (downloaded into Go's module cache once)."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        env=env,
        cwd=cache_dir(),
        check=False,
    )
    info = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    if out.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or out.stderr.strip()[-500:]
        raise ProvisionError(f"{what}: go mod download {module} failed: {reason}")
    return Path(info["Dir"])


def provision_keda_crds(v: Versions, log: Path) -> str:
    """Copy KEDA's CRDs (ScaledObject, TriggerAuthentication) from its module source into the cache,
    so the devstack's apiserver validates the ScaledObjects the operator writes (KEDA itself does not run)."""
    dest = keda_crds_dir(v)
    if stamp_ok(dest / ".stamp", v.keda):
        return "reused"
    src = _go_module_dir(f"github.com/kedacore/keda/v2@{v.keda}", "keda crds") / "config" / "crd" / "bases"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in KEDA_CRDS:
        if not (src / name).exists():
            raise ProvisionError(f"keda crds: {name} not found under {src}")
        origin = f"# from github.com/kedacore/keda/v2@{v.keda}/config/crd/bases/{name}\n"
        (tmp / name).write_text(origin + (src / name).read_text())
    (tmp / ".stamp").write_text(v.keda + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return "built"


def provision_promtool(v: Versions, log: Path) -> str:
    """promtool from the Prometheus Go module (cmd/promtool), for the chart's alerting-rule tests and
    the workers' metric lint. Go >= 1.26 builds it as it is (GOTOOLCHAIN=local); a cold build, module
    downloads included, takes ~20 min on 2 cores, a warm one seconds."""
    if os.access(promtool(), os.X_OK) and stamp_ok(bin_dir() / ".promtool.version", v.prometheus):
        return "reused"
    if shutil.which("go") is None:
        raise ProvisionError("promtool: `go` not found on PATH: install a Go toolchain >= 1.26 first")
    tmp = Path(tempfile.mkdtemp(prefix="promtool-", dir=cache_dir()))
    try:
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOBIN": str(tmp)}
        module = f"github.com/prometheus/prometheus/cmd/promtool@{v.prometheus}"
        _run(["go", "install", module], f"build promtool {v.prometheus}", log, env)
        bin_dir().mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "promtool", promtool())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (bin_dir() / ".promtool.version").write_text(v.prometheus + "\n")
    return "built"


STEPS: dict[str, Callable[[Versions, Path], str]] = {
    "redis": provision_redis,
    "postgres": provision_postgres,
    "kafka": provision_kafka,
    "kafka-cds": provision_kafka_cds,
    "go": provision_go,
    "kwok-stages": provision_kwok_stages,
    "keda-crds": provision_keda_crds,
    "promtool": provision_promtool,
}


@contextlib.contextmanager
def _cache_lock(console: Console) -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".provision.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print("[yellow]waiting for another provisioning run to finish...[/]")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# Steps run beside the others: promtool's cold build is mostly module downloads (network), which
# overlap the Kubernetes compile (CPU) instead of adding ~20 min after it on 2 cores.
BACKGROUND = ("promtool",)


def provision(components: tuple[str, ...] = COMPONENTS, console: Console | None = None) -> list[StepResult]:
    """Provision the given components (all by default), printing each step and how long it took."""
    console = console or Console(stderr=True)
    v = load_versions()
    log = cache_dir() / "provision.log"
    results = []
    unknown = [n for n in components if n not in STEPS]
    if unknown:
        raise ProvisionError(f"unknown component {unknown[0]!r}; choose from {', '.join(STEPS)}")

    def step(name: str) -> StepResult:
        t0 = time.monotonic()
        action = STEPS[name](v, log)
        return StepResult(name, action, time.monotonic() - t0)

    def report(r: StepResult) -> None:
        console.print(f"  {r.component:<12} {r.action:<9} {r.seconds:7.1f}s")
        results.append(r)

    with _cache_lock(console), ThreadPoolExecutor(max_workers=1) as pool:
        beside = {n: pool.submit(step, n) for n in components if n in BACKGROUND and n in missing(v)}
        for name in components:
            if name in beside:
                continue
            with console.status(f"provisioning {name} ..."):
                r = step(name)
            report(r)
        for name, fut in beside.items():
            with console.status(f"provisioning {name} (started beside the others) ..."):
                report(fut.result())
    return results
