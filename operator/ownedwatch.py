"""Watches of what the operator owns besides Deployments (ConfigMap, Service, ServiceAccount, Role,
RoleBinding), filtered by our managed-by label on the server, so a hand edit is undone at once.

Not Kopf handlers, on purpose: Kopf gives every watched object a worker, and at start-up each of them
waits on Kopf's index gate, which wakes every waiter whenever one object is indexed (quadratic: with
1,900 objects, ~20 s of CPU before the first reconcile; these kinds were 500 of them at 100
pipelines). They need nothing else from Kopf: a list, then a watch from its resourceVersion (the
kubernetes client's ``watch.Watch``), relisted after 410 Gone or an error, one thread per kind and
namespace. Events are handed to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from kubernetes import client, watch

__all__ = ["OwnedWatch", "SELECTOR"]

logger = logging.getLogger(__name__)

SELECTOR = "app.kubernetes.io/managed-by=alertpipe-operator"
Callback = Callable[[Mapping[str, Any], bool], None]  # (object, deleted)


def _lists(api: client.ApiClient) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """kind -> (list in one namespace, list in all namespaces)."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    return {
        "ConfigMap": (core.list_namespaced_config_map, core.list_config_map_for_all_namespaces),
        "Service": (core.list_namespaced_service, core.list_service_for_all_namespaces),
        "ServiceAccount": (
            core.list_namespaced_service_account,
            core.list_service_account_for_all_namespaces,
        ),
        "Role": (rbac.list_namespaced_role, rbac.list_role_for_all_namespaces),
        "RoleBinding": (rbac.list_namespaced_role_binding, rbac.list_role_binding_for_all_namespaces),
    }


def scopes(namespaces: Sequence[str]) -> tuple[list[str | None], list[str]]:
    """(namespaces to watch, None meaning all; patterns to filter by). Plain names are watched one by
    one; any glob pattern (or none at all: every namespace) means one cluster-wide watch."""
    if not namespaces:
        return [None], []
    if any(set(n) & set("*?[!") for n in namespaces):
        return [None], [n for n in namespaces if not n.startswith("!")]
    return list(dict.fromkeys(namespaces)), []


class OwnedWatch:
    """``start()`` runs the watches in daemon threads; ``stop()`` ends them at their next event."""

    def __init__(
        self,
        api: client.ApiClient,
        namespaces: Sequence[str],
        callback: Callback,
        loop: asyncio.AbstractEventLoop,
        timeout: int = 300,
    ) -> None:
        self.api = api
        self.callback = callback
        self.loop = loop
        self.timeout = timeout
        self.namespaces, self.patterns = scopes(namespaces)
        self._stop = threading.Event()
        self._watches: list[watch.Watch] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for kind, fns in _lists(self.api).items():
            for ns in self.namespaces:
                t = threading.Thread(
                    target=self._run, args=(kind, fns, ns), name=f"owned-{kind}-{ns or 'all'}", daemon=True
                )
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()  # type: ignore[no-untyped-call]

    def _emit(self, kind: str, obj: dict[str, Any], deleted: bool) -> None:
        ns = (obj.get("metadata") or {}).get("namespace", "")
        if self.patterns and not any(fnmatch.fnmatchcase(ns, p) for p in self.patterns):
            return
        obj.setdefault("kind", kind)
        self.loop.call_soon_threadsafe(self.callback, obj, deleted)

    def _run(self, kind: str, fns: tuple[Callable[..., Any], Callable[..., Any]], ns: str | None) -> None:
        fn, args = (fns[0], (ns,)) if ns is not None else (fns[1], ())
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:  # (re)list: anything edited while we were not watching is checked too
                    resp = fn(*args, label_selector=SELECTOR, _preload_content=False, _request_timeout=60)
                    doc = orjson.loads(resp.data)
                    rv = str(doc["metadata"]["resourceVersion"])
                    for item in doc.get("items") or []:
                        self._emit(kind, item, False)
                w = watch.Watch()  # type: ignore[no-untyped-call]
                self._watches.append(w)
                try:
                    for ev in w.stream(  # type: ignore[no-untyped-call]
                        fn,
                        *args,
                        label_selector=SELECTOR,
                        resource_version=rv,
                        timeout_seconds=self.timeout,
                        allow_watch_bookmarks=True,
                    ):
                        if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self._emit(kind, ev["raw_object"], ev["type"] == "DELETED")
                        if self._stop.is_set():
                            break
                finally:
                    w.stop()  # type: ignore[no-untyped-call]
                    self._watches.remove(w)
                rv = w.resource_version or rv
            except client.ApiException as exc:
                if exc.status != 410:  # 410: our resourceVersion is too old; relist at once
                    where = ns or "all namespaces"
                    logger.warning("watching %s (%s): HTTP %s; relisting in 5 s", kind, where, exc.status)
                    self._stop.wait(5)
                rv = None
            except Exception as exc:  # connection dropped, apiserver restarting: keep watching
                logger.warning("watching %s (%s): %s; relisting in 2 s", kind, ns or "all", exc)
                self._stop.wait(2)
                rv = None
