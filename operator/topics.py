"""The pipeline's Kafka topics: create, adopt, grow (never shrink) what ``decisions.topics`` plans,
through the shared admin clients, on a thread pool (confluent-kafka blocks); and the admin client's
options from the pipeline's spec and its credentials Secret (the same mapping the workers use).

A pipeline whose topics were verified with the same wanted set within the resync period is not
asked about again: rule edits then never wait on Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from alertpipe.operator.backoff import backoff
from alertpipe.operator.decisions.connectivity import secret_not_found
from alertpipe.operator.decisions.events import topic_events
from alertpipe.operator.decisions.topics import TopicPlan, TopicSeen, TopicWant, plan_topics
from alertpipe.operator.events import Poster
from alertpipe.operator.kafka_admin import KafkaAdminError
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.connection import kafka_options
from alertpipe.workers.errors import ConfigError

__all__ = ["Admins", "Shrinks", "TopicResult", "Topics"]

logger = logging.getLogger(__name__)

Shrinks = tuple[tuple[str, int, int], ...]  # (topic, have, want) refused: partitions never shrink


class _Admin(Protocol):
    def observe(self, names: list[str]) -> dict[str, TopicSeen]: ...
    def apply(self, plan: TopicPlan) -> list[str]: ...


class Admins(Protocol):
    """kafka_admin.AdminPool: one admin client per cluster (in-memory in unit tests)."""

    def get(self, bootstrap: str, options: Mapping[str, str]) -> Any: ...


class _Secrets(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class TopicResult:
    error: str = ""  # "" when the topics are as wanted
    reason: str = ""  # the TopicsReady condition's reason for ``error``
    refused_shrinks: Shrinks = ()
    retry: float | None = None  # seconds until the next try after a failure


class Topics:
    def __init__(self, kube: _Secrets, admins: Admins, events: Poster, resync: float) -> None:
        self._kube = kube
        self.admins = admins
        self._events = events
        self._fresh = 0.9 * resync
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="kafka-admin")
        self._failures: dict[tuple[str, str], int] = {}
        # pipeline -> (wanted topics, when verified, refused shrinks)
        self._ok: dict[tuple[str, str], tuple[Any, float, Shrinks]] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._ok.pop((namespace, name), None)

    async def kafka_options(self, namespace: str, spec: AlertPipelineSpec) -> dict[str, str]:
        """The admin client's options (without bootstrap.servers) for the pipeline's cluster."""
        ref = spec.kafka.credentials_secret_ref
        data: dict[str, str] = {}
        field = "spec.kafka.credentialsSecretRef"
        if ref is not None:
            secret = await self._kube.get("Secret", namespace, ref.name)
            if secret is None:
                f = secret_not_found(field, ref.name, None, namespace)
                raise KafkaAdminError(f.message, f.reason)
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        try:  # the workers build theirs the same way (alertpipe.workers.config.connection)
            options = kafka_options(spec.kafka, data.get)
        except ConfigError as exc:
            key = next((k for k in ("sasl.username", "sasl.password") if k not in data), None)
            if ref is not None and key is not None:
                f = secret_not_found(field, ref.name, key, namespace)
                raise KafkaAdminError(f.message, f.reason) from None
            raise KafkaAdminError(f"spec.{exc}") from None
        options.pop("bootstrap.servers")
        return options

    async def reconcile(
        self,
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        spec: AlertPipelineSpec,
        want: list[TopicWant],
    ) -> TopicResult:
        """Make the pipeline's topics what ``want`` says, as far as Kafka allows; post what changed."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        wanted = tuple(want), spec.kafka.bootstrap_servers
        cached = self._ok.get(key)
        if cached is not None and cached[0] == wanted and time.monotonic() - cached[1] < self._fresh:
            return TopicResult(refused_shrinks=cached[2])
        try:
            options = await self.kafka_options(meta["namespace"], spec)
            loop = asyncio.get_running_loop()
            # the first use of a cluster builds its AdminClient: not on the event loop
            admin: _Admin = await loop.run_in_executor(
                self.pool, self.admins.get, spec.kafka.bootstrap_servers, options
            )
            seen = await loop.run_in_executor(self.pool, admin.observe, [w.name for w in want])
            plan = plan_topics(want, seen)
            done = await loop.run_in_executor(self.pool, admin.apply, plan) if plan.changes else []
        except KafkaAdminError as exc:
            attempt = self._failures.get(key, 0)
            self._failures[key] = attempt + 1
            self._ok.pop(key, None)
            delay = backoff(attempt)
            logger.warning("%s/%s: %s; retrying in %.1f s", *key, exc, delay)
            return TopicResult(str(exc), exc.reason, (), delay)
        self._failures.pop(key, None)
        refused = tuple(plan.refused_shrinks)
        self._ok[key] = (wanted, time.monotonic(), refused)
        known = set((status.get("topics") or {}).values())
        for e in topic_events(done, plan.adopt, known):
            self._events.soon(body, e.type, e.reason, e.message)
        return TopicResult(refused_shrinks=refused)
