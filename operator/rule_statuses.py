"""The AlertRule status pass of one namespace: what ``decisions.rule_status`` says each rule's status
is, written where it changed (16 at a time), with a RuleRejected Event for a new rejection."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from alertpipe.operator.decisions.events import rule_rejected_event
from alertpipe.operator.decisions.patch import merge_patch
from alertpipe.operator.decisions.rule_status import rule_status
from alertpipe.operator.events import Poster
from alertpipe.operator.parsed import Parsed
from alertpipe.operator.store import Store

__all__ = ["RuleStatuses"]

JSON = dict[str, Any]


class _Patches(Protocol):
    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: JSON, sub: str | None = None
    ) -> JSON: ...


class RuleStatuses:
    def __init__(self, kube: _Patches, store: Store, parsed: Parsed, events: Poster) -> None:
        self._kube = kube
        self._store = store
        self._parsed = parsed
        self._events = events

    async def reconcile(self, namespace: str) -> float | None:
        store = self._store
        now = datetime.now(UTC)
        pipelines = []
        for p in store.pipelines_in(namespace):
            spec, _ = self._parsed.spec(p)
            if spec is not None and not p["metadata"].get("deletionTimestamp"):
                pipelines.append((p["metadata"]["name"], spec))
        if any((namespace, n) not in store.compiled for n, _ in pipelines):
            # A pipeline not yet compiled since start: its reconcile schedules this pass when done,
            # so statuses are written once, complete (and not at all after a restart).
            return None
        compiled = {n: c for (ns, n), c in store.compiled.items() if ns == namespace}
        writes = []
        for rule in store.rules_in(namespace):
            status = dict(rule.get("status") or {})
            new_status, rejected = rule_status(rule, pipelines, self._parsed.verdict, compiled, now)
            if new_status != status:
                writes.append(self._write(rule, status, new_status, rejected))
        sem = asyncio.Semaphore(16)

        async def bounded(coro: Any) -> None:
            async with sem:
                await coro

        await asyncio.gather(*(bounded(w) for w in writes))
        return None

    async def _write(
        self, rule: Mapping[str, Any], status: JSON, new_status: JSON, rejected: str | None
    ) -> None:
        meta = rule["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        patched = await self._kube.merge_patch(
            "AlertRule", namespace, name, {"status": merge_patch(status, new_status)}, sub="status"
        )
        stored = self._store.rules.get((namespace, name))
        if stored is not None and stored["metadata"].get("uid") == patched.get("metadata", {}).get("uid"):
            stored["status"] = patched.get("status", new_status)
        if (e := rule_rejected_event(status, rejected)) is not None:
            about = {**rule, "kind": "AlertRule", "apiVersion": "alertpipe.io/v1alpha1"}
            self._events.soon(about, e.type, e.reason, e.message)
