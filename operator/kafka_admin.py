"""Kafka I/O for the operator: observe topics (partitions, retention.ms), apply a TopicPlan, and read
a consumer group's committed offsets with the topic's watermarks (for the scaler's lag).

One AdminClient per (bootstrap, options) is kept; calls block, so the reconciler runs them in a thread.
A failed call becomes a KafkaAdminError with a condition reason (decisions.connectivity) and the
client's own words: the connection errors librdkafka reported meanwhile, not only "timed out". Its log
lines go, rate-limited, into the operator's logging (clientlogs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from alertpipe.operator.clientlogs import librdkafka_logger
from alertpipe.operator.decisions.connectivity import kafka_failure
from alertpipe.operator.decisions.lag import GroupOffsets, PartitionOffsets
from alertpipe.operator.decisions.topics import TopicPlan, TopicSeen

__all__ = ["KafkaAdmin", "KafkaAdminError"]

logger = logging.getLogger(__name__)

TIMEOUT = 10.0
WAIT = TIMEOUT + 20.0  # how long a caller waits for a request sent with TIMEOUT


class KafkaAdminError(Exception):
    """A Kafka admin call failed; the message is one line (no credentials), ``reason`` a condition
    reason (KafkaUnreachable, AuthFailed, TopicAuthorizationFailed, SecretNotFound, KafkaError)."""

    def __init__(self, message: str, reason: str = "KafkaError") -> None:
        super().__init__(message)
        self.reason = reason


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return str(getattr(err, "str", lambda: err)())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _code(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        return str(getattr(exc.args[0], "name", lambda: "UNKNOWN")())
    return "_TIMED_OUT" if isinstance(exc, TimeoutError) else type(exc).__name__


class KafkaAdmin:
    """Topic operations against one Kafka cluster."""

    def __init__(self, bootstrap: str, options: Mapping[str, str] | None = None) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": 10_000,
            "reconnect.backoff.ms": 500,
            "reconnect.backoff.max.ms": 10_000,
            "error_cb": self._on_error,
            "logger": librdkafka_logger(),
        }
        conf.update(options or {})
        self.bootstrap = bootstrap
        self._errors: list[tuple[float, str, str]] = []  # (when, code, detail) from error_cb
        self._client = AdminClient(conf)

    def _on_error(self, err: Any) -> None:
        self._errors.append((time.monotonic(), str(err.name()), str(err.str())))
        del self._errors[:-20]

    def _begin(self) -> None:
        """Serve the callbacks (logs, errors) queued since the last call."""
        self._client.poll(0)

    def failed(self, what: str, exc: BaseException) -> KafkaAdminError:
        """The error for a failed call ``what``, with what the client reported while it ran."""
        self._client.poll(0)  # serves error_cb: why a request timed out
        recent = [(c, d) for t, c, d in self._errors if t > time.monotonic() - 2 * WAIT]
        f = kafka_failure(what, self.bootstrap, _code(exc), _one_line(exc), recent)
        return KafkaAdminError(f.message, f.reason)

    def observe(self, names: list[str]) -> dict[str, TopicSeen]:
        """Partitions and retention.ms of those of ``names`` that exist.

        Asks about these topics only (DescribeTopics): listing the cluster's metadata costs CPU per
        topic in the cluster (~100 ms with 6,000 topics), on every pipeline's create and resync.
        """
        partitions: dict[str, int] = {}
        self._begin()
        described = self._client.describe_topics(TopicCollection(names), request_timeout=TIMEOUT)
        for name, topic in described.items():
            try:
                partitions[name] = len(topic.result(timeout=WAIT).partitions)
            except (KafkaException, TimeoutError) as exc:
                if _code(exc) == "UNKNOWN_TOPIC_OR_PART":
                    continue
                raise self.failed(f"describe topic {name}", exc) from None
        present = [n for n in names if n in partitions]
        retention: dict[str, int | None] = {n: None for n in present}
        if present:
            futures = self._client.describe_configs(
                [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present], request_timeout=TIMEOUT
            )
            for res, fut in futures.items():
                try:
                    entries = fut.result(timeout=WAIT)
                except (KafkaException, TimeoutError) as exc:
                    raise self.failed(f"describe the config of topic {res.name}", exc) from None
                entry = entries.get("retention.ms")
                if entry is not None and entry.value is not None:
                    retention[res.name] = int(entry.value)
        return {n: TopicSeen(n, partitions[n], retention[n]) for n in present}

    def apply(self, plan: TopicPlan) -> list[str]:
        """Carry out ``plan``; returns what was done, one line each (for Events)."""
        done: list[str] = []
        self._begin()
        if plan.create:
            futures = self._client.create_topics(
                [
                    NewTopic(
                        w.name, num_partitions=w.partitions, config={"retention.ms": str(w.retention_ms)}
                    )
                    for w in plan.create
                ],
                request_timeout=TIMEOUT,
            )
            for name, fut in futures.items():
                try:
                    fut.result(timeout=WAIT)
                    done.append(f"created topic {name}")
                except (KafkaException, TimeoutError) as exc:
                    if _code(exc) == "TOPIC_ALREADY_EXISTS":
                        continue
                    raise self.failed(f"create topic {name}", exc) from None
        if plan.grow:
            futures = self._client.create_partitions(
                [NewPartitions(name, want) for name, _, want in plan.grow], request_timeout=TIMEOUT
            )
            have = {name: h for name, h, _ in plan.grow}
            want = {name: w for name, _, w in plan.grow}
            for name, fut in futures.items():
                try:
                    fut.result(timeout=WAIT)
                    done.append(f"grew topic {name} from {have[name]} to {want[name]} partitions")
                except (KafkaException, TimeoutError) as exc:
                    raise self.failed(f"grow topic {name}", exc) from None
        if plan.retention:
            resources = [
                ConfigResource(
                    ConfigResource.Type.TOPIC,
                    name,
                    incremental_configs=[
                        ConfigEntry("retention.ms", str(ms), incremental_operation=AlterConfigOpType.SET)
                    ],
                )
                for name, ms in plan.retention
            ]
            for res, fut in self._client.incremental_alter_configs(
                resources, request_timeout=TIMEOUT
            ).items():
                try:
                    fut.result(timeout=WAIT)
                    done.append(f"set retention.ms of topic {res.name}")
                except (KafkaException, TimeoutError) as exc:
                    raise self.failed(f"set retention of topic {res.name}", exc) from None
        return done

    def group_offsets(self, group: str, topic: str) -> GroupOffsets:
        """The group's committed offsets on ``topic`` with its low and high watermarks.

        One ListGroups, one OffsetFetch for the group (every partition it committed; skipped for a
        group that is not listed), one DescribeTopics and two ListOffsets for the topic: the cost
        does not grow with the group's members.
        """
        self._begin()
        try:
            described = self._client.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT)
            count = len(described[topic].result(timeout=WAIT).partitions)
            committed: dict[int, int] = {}
            seen_any = False
            # ListGroups first (answered by every broker, no coordinator): an OffsetFetch for a group
            # that never existed, on a cluster without __consumer_offsets yet, crashed the process
            # (librdkafka 2.16, segfault); a group that is not listed has committed nothing anyway.
            listed = self._client.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=WAIT)
            known = any(g.group_id == group for g in listed.valid)
            req = [ConsumerGroupTopicPartitions(group)]
            fetched = (
                self._client.list_consumer_group_offsets(req, request_timeout=TIMEOUT)[group]
                if known
                else None
            )
            # (waits run past the requests' own timeout, so librdkafka fails a request itself
            # rather than leaving one pending behind an abandoned future)
            for tp in (fetched.result(timeout=WAIT).topic_partitions or []) if fetched is not None else []:
                seen_any = seen_any or tp.offset >= 0
                if tp.topic == topic and tp.error is None and tp.offset >= 0:
                    committed[tp.partition] = tp.offset
            marks: dict[str, dict[int, int]] = {}
            for which, spec in (
                ("low", OffsetSpec.earliest()),  # type: ignore[no-untyped-call]
                ("high", OffsetSpec.latest()),  # type: ignore[no-untyped-call]
            ):
                asked = {TopicPartition(topic, p): spec for p in range(count)}
                futures = self._client.list_offsets(asked, request_timeout=TIMEOUT)
                marks[which] = {tp.partition: f.result(timeout=WAIT).offset for tp, f in futures.items()}
        except (KafkaException, TimeoutError) as exc:
            raise self.failed(f"read the lag of group {group} on topic {topic}", exc) from None
        parts = tuple(
            PartitionOffsets(p, marks["low"].get(p, 0), marks["high"].get(p, 0), committed.get(p))
            for p in range(count)
        )
        return GroupOffsets(group, topic, parts, seen_any, time.time())

    def delete(self, names: list[str]) -> list[str]:
        self._begin()
        futures = self._client.delete_topics(names, request_timeout=TIMEOUT)
        done = []
        for name, fut in futures.items():
            try:
                fut.result(timeout=WAIT)
                done.append(name)
            except (KafkaException, TimeoutError) as exc:
                if _code(exc) == "UNKNOWN_TOPIC_OR_PART":
                    continue
                raise self.failed(f"delete topic {name}", exc) from None
        return done


class AdminPool:
    """One KafkaAdmin per (bootstrap, options), created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admins: dict[tuple[str, tuple[tuple[str, str], ...]], KafkaAdmin] = {}

    def get(self, bootstrap: str, options: Mapping[str, str]) -> KafkaAdmin:
        key = (bootstrap, tuple(sorted(options.items())))
        with self._lock:
            if key not in self._admins:
                self._admins[key] = KafkaAdmin(bootstrap, options)
            return self._admins[key]
