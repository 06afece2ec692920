"""Posting Kubernetes Events about the operator's objects: best effort, never failing a reconcile.

What an Event says is decided in ``decisions.events``; this module only writes it, at once (``post``)
or in the background (``soon``) so a reconcile does not wait on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from alertpipe.operator import metrics
from alertpipe.operator.decisions.events import EventWant, event_object
from alertpipe.operator.kube import KubeError

__all__ = ["EventPoster", "Poster"]

logger = logging.getLogger(__name__)


class _Creates(Protocol):
    async def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...


class Poster(Protocol):
    """What the reconciler's helpers need to tell a user something happened."""

    async def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...
    def soon(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class EventPoster:
    def __init__(self, kube: _Creates) -> None:
        self._kube = kube
        self._background: set[asyncio.Task[None]] = set()

    async def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event about ``obj`` (best effort: a failed Event never fails a reconcile)."""
        meta = obj["metadata"]
        metrics.EVENTS.labels(reason=reason).inc()
        try:
            await self._kube.create(event_object(obj, type_, reason, message, datetime.now(UTC)))
        except KubeError as exc:
            logger.warning(
                "could not post Event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc
            )

    async def post_all(self, obj: Mapping[str, Any], events: list[EventWant]) -> None:
        for e in events:
            await self.post(obj, e.type, e.reason, e.message)

    def soon(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event without holding up the reconcile."""
        task = asyncio.create_task(self.post(dict(obj), type_, reason, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
