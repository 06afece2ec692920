"""The config source of a worker in a cluster: the pipeline's ConfigMap, watched through the API.

A kubelet-mounted ConfigMap file can lag a minute, too slow for a kill switch, so every worker
watches its one ConfigMap (``<pipeline>-config``, data key ``config.json``) itself: list, then watch
from the list's resourceVersion, re-list on 410 Gone, back off (capped, jittered) on errors. The
newest valid revision is kept; an invalid or deleted document is logged and the last good revision
stays in force. The kubernetes client is imported only when a source starts, so workers that read
a file never pay for it.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alertpipe.workers.config.models import PipelineConfig
from alertpipe.workers.errors import ConfigError

__all__ = ["CONFIG_KEY", "KubeConfigMapSource", "backoff_delay", "config_from_configmap_data"]

logger = logging.getLogger(__name__)

CONFIG_KEY = "config.json"
_GONE = 410


def config_from_configmap_data(data: Mapping[str, str] | None, *, where: str = "") -> PipelineConfig:
    """The PipelineConfig held by a ConfigMap's ``data``; ConfigError saying what is wrong."""
    path = f"{where}.data[{CONFIG_KEY!r}]" if where else f"data[{CONFIG_KEY!r}]"
    if not data or CONFIG_KEY not in data:
        raise ConfigError(path, "missing: the ConfigMap must hold the PipelineConfig JSON under this key")
    try:
        config = PipelineConfig.from_json(data[CONFIG_KEY])
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}.{loc}" if loc else path, first["msg"]) from None
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        raise ConfigError(path, f"not JSON: {exc}") from None
    return config if config.revision else config.with_revision()


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)], at least 50 ms."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return max(0.05, (rng or random).uniform(0, ceiling))


class KubeConfigMapSource:
    """Watches one ConfigMap and keeps its newest valid PipelineConfig (see the module docstring).

    ``kubeconfig``: a kubeconfig path; default $KUBECONFIG, else the in-cluster service account,
    else ~/.kube/config. ``on_change`` is called (from the watch thread) with each new revision.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        kubeconfig: str | Path | None = None,
        watch_timeout: int = 30,
        on_change: Callable[[PipelineConfig], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._kubeconfig = str(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG")
        self._watch_timeout = watch_timeout
        self._on_change = on_change
        self._config: PipelineConfig | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self.errors = 0  # consecutive API errors (for health reporting)

    def __repr__(self) -> str:
        return f"KubeConfigMapSource({self.namespace}/{self.name})"

    # --- ConfigSource ---------------------------------------------------------------------------

    def current(self) -> PipelineConfig | None:
        return self._config

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"config-cm-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()

    def wait_loaded(self, timeout: float) -> bool:
        """Block until a first list finished (whether or not it found a valid document)."""
        return self._loaded.wait(timeout)

    # --- internals ------------------------------------------------------------------------------

    def _apply(self, obj: Mapping[str, Any], event: str) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("name") != self.name:
            return
        where = f"configmap {self.namespace}/{self.name}"
        try:
            config = config_from_configmap_data(obj.get("data"), where=where)
        except ConfigError as exc:
            logger.error("%s (%s) is invalid, keeping the last good revision: %s", where, event, exc)
            return
        old = self._config
        if old is not None and old.revision == config.revision:
            return
        self._config = config
        logger.info("config revision %s loaded from %s (%s)", config.revision, where, event)
        if self._on_change is not None:
            self._on_change(config)

    def _api(self) -> Any:
        # Imported here (heavy; only workers in a cluster need it) and used untyped: the client is.
        client: Any = importlib.import_module("kubernetes.client")
        config: Any = importlib.import_module("kubernetes.config")
        cfg = client.Configuration()
        if self._kubeconfig:
            config.load_kube_config(config_file=self._kubeconfig, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
        return client.CoreV1Api(client.ApiClient(cfg))

    def _list(self, api: Any) -> str:
        import orjson  # noqa: PLC0415

        resp = api.list_namespaced_config_map(
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            _preload_content=False,
            _request_timeout=(5, 30),
        )
        body = orjson.loads(resp.data)
        items = body.get("items") or []
        if not items:
            logger.warning("configmap %s/%s not found yet; waiting for it", self.namespace, self.name)
        for item in items:
            self._apply(item, "list")
        return str(body["metadata"]["resourceVersion"])

    def _watch_from(self, api: Any, rv: str) -> str | None:
        """Watch from ``rv``; the newest resourceVersion seen, or None when it expired (re-list)."""
        watch: Any = importlib.import_module("kubernetes.watch")
        api_exception: type[Exception] = importlib.import_module("kubernetes.client.exceptions").ApiException

        w = watch.Watch()
        self._watch = w
        try:
            for ev in w.stream(
                api.list_namespaced_config_map,
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout,
                _request_timeout=(5, self._watch_timeout + 15),
                deserialize=False,
            ):
                if self._stop.is_set():
                    break
                kind = ev.get("type")
                obj = ev.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == _GONE:
                        return None
                    raise RuntimeError(f"watch error: {obj.get('reason')}: {obj.get('message')}")
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
                if kind in ("ADDED", "MODIFIED"):
                    self._apply(obj, kind.lower())
                elif kind == "DELETED":
                    logger.warning(
                        "configmap %s/%s was deleted; keeping revision %s",
                        self.namespace, self.name, self._config.revision if self._config else None,
                    )
                self.errors = 0
        except api_exception as exc:
            if getattr(exc, "status", None) == _GONE:
                return None
            raise
        finally:
            self._watch = None
        return rv

    def _run(self) -> None:
        api = None
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if api is None:
                    api = self._api()
                if rv is None:
                    rv = self._list(api)
                    self._loaded.set()
                rv = self._watch_from(api, rv)
                self.errors = 0
            except Exception as exc:  # noqa: BLE001 - any API/network failure: back off and retry
                self.errors += 1
                delay = backoff_delay(self.errors)
                first_line = (str(exc).splitlines() or [""])[0]
                logger.warning(
                    "watching configmap %s/%s failed (%s: %s); retrying in %.1fs",
                    self.namespace, self.name, type(exc).__name__, first_line, delay,
                )
                rv = None  # re-list after an error: events may have been missed
                self._stop.wait(delay)
