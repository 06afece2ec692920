"""A thin asyncio façade over the kubernetes client: get / create / replace / patch / delete by kind,
with plain dicts in and out (the generated model classes would only be converted back to dicts).

Calls run in worker threads (the official client is synchronous); ApiException becomes KubeError
with the status code so callers can tell a conflict (409) or a missing object (404) from the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from kubernetes import client, config

from alertpipe.operator import metrics

__all__ = ["Kube", "KubeError", "load_client"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

# kind -> (api prefix, plural)
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "AlertPipeline": ("/apis/alertpipe.io/v1alpha1", "alertpipelines"),
    "AlertRule": ("/apis/alertpipe.io/v1alpha1", "alertrules"),
    "ScaledObject": ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    "TriggerAuthentication": ("/apis/keda.sh/v1alpha1", "triggerauthentications"),
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"HTTP {status}: {reason}")


def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config), else in-cluster."""
    try:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


def _message(data: bytes | str | None, fallback: object) -> str:
    try:
        body = orjson.loads(data or b"{}")
        return str(body.get("message") or fallback)
    except (ValueError, TypeError, AttributeError):
        return str(fallback)


def _short_reason(exc: client.ApiException) -> str:
    return _message(exc.body, exc.reason)


class Kube:
    def __init__(self, api: client.ApiClient, threads: int = 32) -> None:
        self.api = api
        self.threads = threads
        # Its own threads: slow Kafka admin calls elsewhere never queue API calls behind them.
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kube")

    async def warm(self, connections: int = 8) -> None:
        """Start every pool thread and open ``connections`` HTTPS connections now, not on the first
        pipeline's create path: a thread start waits for the new thread to be scheduled (long on a
        busy node) and a connection costs a TLS handshake."""
        loop = asyncio.get_running_loop()
        started = threading.Barrier(self.threads, timeout=30)
        waits = [loop.run_in_executor(self._pool, started.wait) for _ in range(self.threads)]
        await asyncio.gather(*waits, return_exceptions=True)
        results = await asyncio.gather(
            *(self.call("GET", "/version") for _ in range(connections)), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            logger.warning("warming the API connections: %s", failed[0])

    @staticmethod
    def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = KINDS[kind]
        out = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            out += f"/{name}"
        if sub:
            out += f"/{sub}"
        return out

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        try:
            m, url, headers, payload, post = self.api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(
                m, url, header_params=headers, body=payload, post_params=post, _request_timeout=30
            )
            data = resp.read()  # type: ignore[no-untyped-call]
        except client.ApiException as exc:
            raise KubeError(int(exc.status or 0), _short_reason(exc)) from None
        except OSError as exc:  # urllib3 connection errors are OSErrors
            raise KubeError(0, f"cannot reach the Kubernetes API: {exc}") from None
        if not 200 <= resp.status <= 299:
            raise KubeError(resp.status, _message(data, resp.reason))
        return orjson.loads(data) if data else {}

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> JSON:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._call(method, path, body, **kw))

    async def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        try:
            return await self.call("GET", self.path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[JSON]:
        query = [("labelSelector", label_selector)] if label_selector else []
        out = await self.call("GET", self.path(kind, namespace), query=query)
        return list(out.get("items", []))

    async def create(self, obj: JSON) -> JSON:
        ns = obj["metadata"]["namespace"]
        out = await self.call("POST", self.path(obj["kind"], ns), obj)
        metrics.WRITES.labels(kind=obj["kind"], verb="create").inc()
        return out

    async def replace(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        out = await self.call("PUT", self.path(obj["kind"], meta["namespace"], meta["name"]), obj)
        metrics.WRITES.labels(kind=obj["kind"], verb="update").inc()
        return out

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: JSON, sub: str | None = None
    ) -> JSON:
        metrics.WRITES.labels(kind=kind, verb="patch" if sub is None else f"patch-{sub}").inc()
        return await self.call(
            "PATCH", self.path(kind, namespace, name, sub), patch, content_type="application/merge-patch+json"
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        metrics.WRITES.labels(kind=kind, verb="delete").inc()
        try:
            await self.call("DELETE", self.path(kind, namespace, name), {"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise
