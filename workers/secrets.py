"""Resolving a ``SecretKeyRef`` of the PipelineConfig to its value, for every worker.

In a cluster the operator mounts each Secret a pipeline references at
``/var/run/secrets/alertpipe/<secret-name>/<key>`` (the kubelet's layout: one file per key); locally
``--secrets-dir DIR`` (or env ``ALERTPIPE_SECRETS_DIR``) points at a folder with the same layout.
Values come back as pydantic ``SecretStr``/``SecretBytes`` so that repr, str, logs and error messages
never show them; a missing secret raises ConfigError naming the ref, never a value. Files are read
on every call (the kubelet rotates mounted Secrets in place); callers cache as they see fit.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretBytes, SecretStr

from alertpipe.workers.config.models import SecretKeyRef
from alertpipe.workers.errors import ConfigError

__all__ = ["DEFAULT_SECRETS_DIR", "SECRETS_DIR_ENV", "SecretResolver", "add_secrets_argument"]

logger = logging.getLogger(__name__)

DEFAULT_SECRETS_DIR = Path("/var/run/secrets/alertpipe")
SECRETS_DIR_ENV = "ALERTPIPE_SECRETS_DIR"

# Kubernetes allows Secret keys of [-._a-zA-Z0-9]+; anything else (a slash, "..") could leave the folder.
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _ref_text(ref: SecretKeyRef) -> str:
    return f"secret {ref.name!r} key {ref.key!r}"


class SecretResolver:
    """Reads Secret values from a folder laid out as ``<root>/<secret-name>/<key>``."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"SecretResolver(root={str(self.root)!r})"

    def path(self, ref: SecretKeyRef) -> Path:
        """Where the value of ``ref`` is expected (raises ConfigError for names that could escape)."""
        if not _NAME.match(ref.name) or ".." in ref.name:
            raise ConfigError("secretKeyRef.name", f"{ref.name!r} is not a valid Secret name")
        if not _KEY.match(ref.key) or ref.key in {".", ".."}:
            raise ConfigError("secretKeyRef.key", f"{ref.key!r} is not a valid Secret key")
        return self.root / ref.name / ref.key

    def resolve_bytes(self, ref: SecretKeyRef) -> SecretBytes:
        """The raw value of ``ref``; ConfigError when it is missing or unreadable."""
        path = self.path(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                "secretKeyRef",
                f"{_ref_text(ref)} not found: expected a file at {path}"
                " (mount the Secret there or pass --secrets-dir)",
            ) from None
        except OSError as exc:
            raise ConfigError(
                "secretKeyRef", f"{_ref_text(ref)} cannot be read at {path}: {exc.strerror}"
            ) from None
        return SecretBytes(data)

    def resolve(self, ref: SecretKeyRef, *, strip: bool = True) -> SecretStr:
        """The value of ``ref`` as text (UTF-8); trailing whitespace and newlines removed by default."""
        raw = self.resolve_bytes(ref).get_secret_value()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("secretKeyRef", f"{_ref_text(ref)} is not UTF-8 text") from None
        return SecretStr(text.rstrip() if strip else text)

    def key_of(self, name: str) -> Callable[[str], str | None]:
        """A reader of Secret ``name``'s keys (None: no such key), for ``kafka_options``."""

        def read(key: str) -> str | None:
            ref = SecretKeyRef(name=name, key=key)
            return self.resolve(ref).get_secret_value() if self.exists(ref) else None

        return read

    def exists(self, ref: SecretKeyRef) -> bool:
        try:
            return self.path(ref).is_file()
        except ConfigError:
            return False


def add_secrets_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--secrets-dir`` option every worker CLI shares."""
    parser.add_argument(
        "--secrets-dir",
        default=None,
        metavar="DIR",
        help=(
            f"folder laid out as DIR/<secret-name>/<key> (default: ${SECRETS_DIR_ENV} or "
            f"{DEFAULT_SECRETS_DIR}, where the operator mounts the pipeline's Secrets)"
        ),
    )
