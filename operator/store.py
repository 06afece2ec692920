"""The operator's view of the cluster, fed by Kopf's watches: pipelines, rules and the pipelines'
Deployments as last seen (plain dicts), and what each pipeline last compiled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Store"]

JSON = dict[str, Any]


def _essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata", {})
    return (
        meta.get("uid"),
        meta.get("generation"),
        tuple(sorted((meta.get("labels") or {}).items())),
        meta.get("deletionTimestamp"),
    )


class Store:
    """The operator's view of the cluster, fed by Kopf's watches (plain dicts, latest seen)."""

    def __init__(self) -> None:
        self.pipelines: dict[tuple[str, str], JSON] = {}
        self.rules: dict[tuple[str, str], JSON] = {}
        self.deployments: dict[tuple[str, str], JSON] = {}
        # pipeline -> (revision, names of the rules live in it)
        self.compiled: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}

    def put(self, table: dict[tuple[str, str], JSON], body: Mapping[str, Any]) -> bool:
        """Store ``body``; True when its essence (uid, generation, labels, deletion) changed."""
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        old = table.get(key)
        table[key] = dict(body)
        return old is None or _essence(old) != _essence(body)

    def rules_in(self, namespace: str) -> list[JSON]:
        return [b for (ns, _), b in sorted(self.rules.items()) if ns == namespace]

    def pipelines_in(self, namespace: str) -> list[JSON]:
        return [b for (ns, _), b in sorted(self.pipelines.items()) if ns == namespace]
