"""Kafka I/O for the operator: observe topics (partitions, retention.ms), apply a TopicPlan, and read
a consumer group's committed offsets with the topic's watermarks (for the scaler's lag).

One AdminClient per (bootstrap, options) is kept; calls block, so the reconciler runs them in a thread.
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

from alertpipe.operator.decisions.lag import GroupOffsets, PartitionOffsets
from alertpipe.operator.decisions.topics import TopicPlan, TopicSeen

__all__ = ["KafkaAdmin", "KafkaAdminError"]

logger = logging.getLogger(__name__)

TIMEOUT = 10.0
WAIT = TIMEOUT + 20.0  # how long a caller waits for a request sent with TIMEOUT


class KafkaAdminError(Exception):
    """A Kafka admin call failed; the message is one line (no credentials)."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return str(getattr(err, "str", lambda: err)())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class KafkaAdmin:
    """Topic operations against one Kafka cluster."""

    def __init__(self, bootstrap: str, options: Mapping[str, str] | None = None) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000}
        conf.update(options or {})
        self.bootstrap = bootstrap
        self._client = AdminClient(conf)

    def observe(self, names: list[str]) -> dict[str, TopicSeen]:
        """Partitions and retention.ms of those of ``names`` that exist.

        Asks about these topics only (DescribeTopics): listing the cluster's metadata costs CPU per
        topic in the cluster (~100 ms with 6,000 topics), on every pipeline's create and resync.
        """
        partitions: dict[str, int] = {}
        described = self._client.describe_topics(TopicCollection(names), request_timeout=TIMEOUT)
        for name, topic in described.items():
            try:
                partitions[name] = len(topic.result(timeout=TIMEOUT).partitions)
            except KafkaException as exc:
                if exc.args and getattr(exc.args[0], "name", lambda: "")() == "UNKNOWN_TOPIC_OR_PART":
                    continue
                raise KafkaAdminError(
                    f"cannot describe topic {name} at {self.bootstrap}: {_one_line(exc)}"
                ) from None
        present = [n for n in names if n in partitions]
        retention: dict[str, int | None] = {n: None for n in present}
        if present:
            futures = self._client.describe_configs(
                [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present], request_timeout=TIMEOUT
            )
            for res, fut in futures.items():
                try:
                    entries = fut.result(timeout=TIMEOUT)
                except KafkaException as exc:
                    raise KafkaAdminError(f"describe topic {res.name}: {_one_line(exc)}") from None
                entry = entries.get("retention.ms")
                if entry is not None and entry.value is not None:
                    retention[res.name] = int(entry.value)
        return {n: TopicSeen(n, partitions[n], retention[n]) for n in present}

    def apply(self, plan: TopicPlan) -> list[str]:
        """Carry out ``plan``; returns what was done, one line each (for Events)."""
        done: list[str] = []
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
                    fut.result(timeout=TIMEOUT)
                    done.append(f"created topic {name}")
                except KafkaException as exc:
                    if exc.args and getattr(exc.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                        continue
                    raise KafkaAdminError(f"create topic {name}: {_one_line(exc)}") from None
        if plan.grow:
            futures = self._client.create_partitions(
                [NewPartitions(name, want) for name, _, want in plan.grow], request_timeout=TIMEOUT
            )
            have = {name: h for name, h, _ in plan.grow}
            want = {name: w for name, _, w in plan.grow}
            for name, fut in futures.items():
                try:
                    fut.result(timeout=TIMEOUT)
                    done.append(f"grew topic {name} from {have[name]} to {want[name]} partitions")
                except KafkaException as exc:
                    raise KafkaAdminError(f"grow topic {name}: {_one_line(exc)}") from None
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
                    fut.result(timeout=TIMEOUT)
                    done.append(f"set retention.ms of topic {res.name}")
                except KafkaException as exc:
                    raise KafkaAdminError(f"set retention of topic {res.name}: {_one_line(exc)}") from None
        return done

    def group_offsets(self, group: str, topic: str) -> GroupOffsets:
        """The group's committed offsets on ``topic`` with its low and high watermarks.

        One ListGroups, one OffsetFetch for the group (every partition it committed; skipped for a
        group that is not listed), one DescribeTopics and two ListOffsets for the topic: the cost
        does not grow with the group's members.
        """
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
        except KafkaException as exc:
            raise KafkaAdminError(f"lag of group {group} on topic {topic}: {_one_line(exc)}") from None
        except TimeoutError:
            raise KafkaAdminError(
                f"lag of group {group} on topic {topic}: Kafka did not answer in {WAIT:.0f} s"
            ) from None
        parts = tuple(
            PartitionOffsets(p, marks["low"].get(p, 0), marks["high"].get(p, 0), committed.get(p))
            for p in range(count)
        )
        return GroupOffsets(group, topic, parts, seen_any, time.time())

    def delete(self, names: list[str]) -> list[str]:
        futures = self._client.delete_topics(names, request_timeout=TIMEOUT)
        done = []
        for name, fut in futures.items():
            try:
                fut.result(timeout=TIMEOUT)
                done.append(name)
            except KafkaException as exc:
                if exc.args and getattr(exc.args[0], "name", lambda: "")() == "UNKNOWN_TOPIC_OR_PART":
                    continue
                raise KafkaAdminError(f"delete topic {name}: {_one_line(exc)}") from None
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
