"""Running the helm binary over charts/alertpipe: locate it, render with values, parse the output.

Shared by the unit tests (helm template, helm lint) and the integration tests (helm install).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "alertpipe"
CRDS = ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"

Doc = dict[str, Any]


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def find_helm() -> Path | None:
    """$ALERTPIPE_HELM, the devstack cache ($ALERTPIPE_CACHE or ~/.cache/alertpipe)/bin/helm, or PATH."""
    if env := os.environ.get("ALERTPIPE_HELM"):
        return Path(env)
    cache = Path(os.environ.get("ALERTPIPE_CACHE") or Path.home() / ".cache" / "alertpipe").expanduser()
    if (cand := cache / "bin" / "helm").is_file():
        return cand
    found = shutil.which("helm")
    return Path(found) if found else None


def kube_version() -> str:
    """The devstack's pinned Kubernetes version: `helm template` checks the chart's kubeVersion against it."""
    for line in (ROOT / "devstack" / "versions.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "KUBERNETES_VERSION":
            return value.strip().strip("\"'")
    raise AssertionError("KUBERNETES_VERSION missing from devstack/versions.env")


def run_helm(
    helm: Path,
    args: Sequence[str],
    *,
    values: Mapping[str, Any] | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run helm with optional values (written to a temp file); return stdout, raise HelmError."""
    with tempfile.TemporaryDirectory(prefix="alertpipe-helm-") as tmp:
        cmd = [str(helm), *args]
        if values is not None:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            cmd += ["-f", str(path)]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "HELM_CACHE_HOME": tmp, "HELM_CONFIG_HOME": tmp, **(env or {})},
        )
    if proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def template(
    helm: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "ap",
    namespace: str = "alertpipe-system",
) -> list[Doc]:
    """`helm template` of the chart, parsed. Renders are cached per values (helm takes ~0.3 s a run);
    each caller gets its own copy."""
    key = json.dumps(values, sort_keys=True) if values is not None else None
    return copy.deepcopy(_template(helm, key, release, namespace))


@functools.lru_cache(maxsize=64)
def _template(helm: Path, values_json: str | None, release: str, namespace: str) -> list[Doc]:
    out = run_helm(
        helm,
        ["template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version()],
        values=json.loads(values_json) if values_json is not None else None,
    )
    return [d for d in yaml.safe_load_all(out) if d]


def template_error(helm: Path, values: Mapping[str, Any]) -> str:
    try:
        template(helm, values)
    except HelmError as e:
        return str(e)
    raise AssertionError(f"helm template accepted values it should reject: {values}")


def of_kind(docs: Sequence[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Sequence[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def load_crd_dir(folder: Path) -> dict[str, Doc]:
    """CRDs of a folder of YAML files, by metadata.name."""
    out: dict[str, Doc] = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["metadata"]["name"]] = doc
    return out


def rules_of(docs: Sequence[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(role-like object, rule) for every rule of every Role and ClusterRole."""
    for d in docs:
        if d.get("kind") in ("Role", "ClusterRole"):
            for rule in d.get("rules") or []:
                yield d, rule
