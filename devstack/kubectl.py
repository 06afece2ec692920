"""kubectl as a tenant runs it against the devstack: the binary provisioned at the stack's Kubernetes
version, with the stack's kubeconfig, manifests passed as YAML on stdin (as ``kubectl apply -f -``)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.paths import bin_dir

__all__ = ["Kubectl", "KubectlResult"]


@dataclass(frozen=True)
class KubectlResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> KubectlResult:
        """Self when kubectl succeeded; otherwise an error with kubectl's own message."""
        if self.returncode != 0:
            cmd = " ".join(self.args)
            raise RuntimeError(f"kubectl {cmd} exited {self.returncode}: {self.stderr.strip()}")
        return self


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: Path
    namespace: str | None = None
    binary: Path | None = None  # default: the provisioned one

    def __call__(
        self, *args: str, manifests: Sequence[Mapping[str, Any]] | None = None, timeout: float = 60.0
    ) -> KubectlResult:
        cmd = [str(self.binary or bin_dir() / "kubectl"), "--kubeconfig", str(self.kubeconfig)]
        if self.namespace:
            cmd += ["--namespace", self.namespace]
        stdin = yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False) if manifests else None
        out = subprocess.run(  # noqa: S603 - our own binary, our own arguments
            [*cmd, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        return KubectlResult(tuple(args), out.returncode, out.stdout, out.stderr)

    def apply(self, *manifests: Mapping[str, Any], server_side: bool = False) -> str:
        """``kubectl apply -f -`` (client-side, or ``--server-side``); kubectl's output lines."""
        extra = ["--server-side"] if server_side else []
        return self("apply", *extra, "-f", "-", manifests=manifests).check().stdout
