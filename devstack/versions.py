"""Pinned component versions, parsed from devstack/versions.env (the one place they are written)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["VERSIONS_FILE", "Versions", "load_versions", "parse_env_file"]

VERSIONS_FILE = Path(__file__).resolve().parent / "versions.env"


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#` comments ignored; optional surrounding quotes stripped."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"line {n}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    kwok: str
    helm: str
    kafka: str
    keda: str
    prometheus: str


def load_versions(path: Path = VERSIONS_FILE) -> Versions:
    env = parse_env_file(path.read_text())
    try:
        return Versions(
            kubernetes=env["KUBERNETES_VERSION"],
            etcd=env["ETCD_VERSION"],
            kwok=env["KWOK_VERSION"],
            helm=env["HELM_VERSION"],
            kafka=env["KAFKA_VERSION"],
            keda=env["KEDA_VERSION"],
            prometheus=env["PROMETHEUS_VERSION"],
        )
    except KeyError as e:
        raise ValueError(f"{path}: missing {e.args[0]}") from None
