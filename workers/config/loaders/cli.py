"""Picking a worker's config source from its ``--config`` argument.

``file:PATH`` polls a JSON file (local runs, tests); ``configmap:NAMESPACE/NAME`` watches that
ConfigMap through the Kubernetes API (in a cluster; kubeconfig from $KUBECONFIG or in-cluster).
Every worker CLI calls ``add_config_argument`` and ``parse_config_arg`` so they all read the same way.
"""

from __future__ import annotations

import argparse
import re

from alertpipe.workers.config.loaders.file import FileConfigSource
from alertpipe.workers.config.loaders.kube import KubeConfigMapSource
from alertpipe.workers.config.source import ConfigSource
from alertpipe.workers.errors import ConfigError

__all__ = ["add_config_argument", "parse_config_arg"]

_DNS = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_USAGE = "expected file:PATH or configmap:NAMESPACE/NAME"


def parse_config_arg(arg: str, *, file_interval: float = 0.2) -> ConfigSource:
    """A (not yet started) ConfigSource for ``arg``; ConfigError with usage when it is malformed."""
    scheme, sep, rest = arg.partition(":")
    if not sep or not rest:
        raise ConfigError("--config", f"{arg!r}: {_USAGE}")
    if scheme == "file":
        return FileConfigSource(rest, interval=file_interval)
    if scheme == "configmap":
        ns, slash, name = rest.partition("/")
        if not slash or not _DNS.match(ns) or not _DNS.match(name):
            raise ConfigError("--config", f"{arg!r}: {_USAGE} (lowercase DNS names)")
        return KubeConfigMapSource(ns, name)
    raise ConfigError("--config", f"{arg!r}: unknown source {scheme!r}; {_USAGE}")


def add_config_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        required=required,
        metavar="SOURCE",
        help="where the PipelineConfig comes from: file:PATH or configmap:NAMESPACE/NAME",
    )
