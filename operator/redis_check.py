"""Does a pipeline's Redis answer? One PING per pipeline, remembered while it keeps answering.

The workers cannot dedup, checkpoint or claim deliveries without Redis; a pipeline whose Redis is
down should say so in its status (RedisReady) rather than only in the workers' logs. A Redis that
answered is not asked again within the resync period (rule edits never wait on it); one that did
not is asked again with backoff (the reconcile's retry). The URL may hold a password: messages name
host:port only.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from alertpipe.operator.decisions.connectivity import Failure, redis_failure, secret_not_found
from alertpipe.operator.models import RedisSpec

__all__ = ["RedisChecks", "redis_address"]

TIMEOUT = 3.0
GetSecret = Callable[[str, str], Coroutine[Any, Any, dict[str, Any] | None]]


def redis_address(url: str) -> str:
    """host:port of a redis:// URL, without user or password."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


class RedisChecks:
    def __init__(self, get_secret: GetSecret, fresh: float) -> None:
        self._get_secret = get_secret
        self._fresh = fresh  # seconds a successful PING is trusted
        self._ok: dict[tuple[str, str], tuple[str, float]] = {}  # pipeline -> (url, when it answered)

    async def _url(self, namespace: str, spec: RedisSpec) -> str | Failure:
        if spec.url is not None:
            return spec.url
        ref = spec.url_secret_ref
        assert ref is not None  # noqa: S101 - the model requires url or urlSecretRef
        secret = await self._get_secret(namespace, ref.name)
        value = ((secret or {}).get("data") or {}).get(ref.key)
        if secret is None or value is None:
            key = None if secret is None else ref.key
            return secret_not_found("spec.redis.urlSecretRef", ref.name, key, namespace)
        return base64.b64decode(value).decode()

    async def check(self, namespace: str, name: str, spec: RedisSpec) -> Failure | None:
        """None when Redis answers PING; otherwise why not."""
        url = await self._url(namespace, spec)
        if isinstance(url, Failure):
            self._ok.pop((namespace, name), None)
            return url
        cached = self._ok.get((namespace, name))
        if cached is not None and cached[0] == url and time.monotonic() - cached[1] < self._fresh:
            return None
        client = aioredis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            self._ok.pop((namespace, name), None)
            return redis_failure(
                redis_address(url), str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
        finally:
            await client.aclose()
        self._ok[(namespace, name)] = (url, time.monotonic())
        return None

    def forget(self, namespace: str, name: str) -> None:
        self._ok.pop((namespace, name), None)
