"""What a worker reads its PipelineConfig from: the ``ConfigSource`` protocol, and a fixed source.

A source keeps the newest valid revision; a worker reads ``current()`` at a batch boundary, so a
new revision is swapped in atomically without a restart. An invalid document is logged and
ignored: the worker keeps running on the last good revision. The sources that do I/O (a file
polled, the ConfigMap watched, the ``--config`` argument) are loaders: ``config.loaders``.
"""

from __future__ import annotations

from typing import Protocol

from alertpipe.workers.config.models import PipelineConfig

__all__ = ["ConfigSource", "StaticConfigSource"]


class ConfigSource(Protocol):
    def current(self) -> PipelineConfig | None:
        """The newest valid revision seen, or None before the first one."""

    def start(self) -> None:
        """Begin watching in the background."""

    def stop(self) -> None:
        """Stop watching."""


class StaticConfigSource:
    """A fixed config (tests, one-shot tools)."""

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config

    def current(self) -> PipelineConfig | None:
        return self._config

    def set(self, config: PipelineConfig) -> None:
        self._config = config

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
