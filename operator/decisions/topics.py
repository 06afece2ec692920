"""Kafka topic decisions: which topics a pipeline wants, and what to do about the ones that exist.

Create what is missing, adopt what exists, grow partitions, never shrink (Kafka cannot; the condition
says PartitionDecreaseNotSupported, as Strimzi does), and bring retention.ms in line.

Names are the tenants' boundary on a shared cluster: every topic of a pipeline starts with
``<namespace>.`` (derived names are ``<namespace>.<pipeline>.<purpose>``; explicit ones must keep the
prefix). A namespace holds no ``.`` or ``_``, so no two namespaces can name, adopt, or delete (with
deletionPolicy: Delete) the same topic, even as Kafka folds ``.`` into ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alertpipe.operator.models import KafkaSpec, TopicSpec
from alertpipe.workers.config.durations import parse_duration
from alertpipe.workers.config.models import Topics

__all__ = [
    "PURPOSES",
    "TopicPlan",
    "TopicSeen",
    "TopicWant",
    "desired_topics",
    "kafka_folded",
    "plan_topics",
    "topic_name_errors",
    "topic_names",
]

# purpose (wire name) -> attribute of PipelineTopics / Topics
PURPOSES: dict[str, str] = {
    "events": "events",
    "alerts": "alerts",
    "late": "late",
    "deadLetter": "dead_letter",
    "audit": "audit",
    "retry": "retry",
    "repartition": "repartition",
}


@dataclass(frozen=True)
class TopicWant:
    purpose: str
    name: str
    partitions: int
    retention_ms: int


@dataclass(frozen=True)
class TopicSeen:
    name: str
    partitions: int
    retention_ms: int | None = None


@dataclass(frozen=True)
class TopicPlan:
    create: list[TopicWant] = field(default_factory=list)
    adopt: list[str] = field(default_factory=list)
    grow: list[tuple[str, int, int]] = field(default_factory=list)  # (name, have, want)
    retention: list[tuple[str, int]] = field(default_factory=list)  # (name, retention.ms)
    refused_shrinks: list[tuple[str, int, int]] = field(default_factory=list)  # (name, have, want)

    @property
    def changes(self) -> bool:
        return bool(self.create or self.grow or self.retention)


def _name(namespace: str, pipeline: str, purpose: str, spec: TopicSpec) -> str:
    return spec.name or f"{namespace}.{pipeline}.{purpose}"


def kafka_folded(name: str) -> str:
    """The name as Kafka compares it for collisions (its metrics fold '.' into '_')."""
    return name.replace(".", "_")


def topic_name_errors(namespace: str, pipeline: str, kafka: KafkaSpec) -> list[tuple[str, str]]:
    """(field path, reason) for each topic name that could reach outside the pipeline's namespace,
    or that two purposes of the pipeline share."""
    errors: list[tuple[str, str]] = []
    if "." in pipeline or "_" in pipeline:
        errors.append(("metadata.name", "an AlertPipeline's name may not hold '.' or '_' (it names topics)"))
    prefix = f"{namespace}."
    seen: dict[str, str] = {}
    for purpose, attr in PURPOSES.items():
        spec: TopicSpec = getattr(kafka.topics, attr)
        name = _name(namespace, pipeline, purpose, spec)
        path = f"spec.kafka.topics.{purpose}.name"
        if spec.name is not None and not spec.name.startswith(prefix):
            why = f"must start with {prefix!r}: a pipeline names topics only in its own namespace"
            errors.append((path, why))
            continue
        other = seen.setdefault(kafka_folded(name), purpose)
        if other != purpose:
            errors.append((path, f"is the same topic as spec.kafka.topics.{other} ({name!r})"))
    return errors


def topic_names(namespace: str, pipeline: str, kafka: KafkaSpec) -> Topics:
    """The contract's Topics of a pipeline (explicit names or ``<namespace>.<pipeline>.<purpose>``)."""
    return Topics.model_validate(
        {
            purpose: _name(namespace, pipeline, purpose, getattr(kafka.topics, attr))
            for purpose, attr in PURPOSES.items()
        }
    )


def desired_topics(namespace: str, pipeline: str, kafka: KafkaSpec) -> list[TopicWant]:
    out = []
    for purpose, attr in PURPOSES.items():
        spec: TopicSpec = getattr(kafka.topics, attr)
        out.append(
            TopicWant(
                purpose=purpose,
                name=_name(namespace, pipeline, purpose, spec),
                partitions=spec.partitions,
                retention_ms=round(parse_duration(spec.retention) * 1000),
            )
        )
    return out


def plan_topics(want: list[TopicWant], seen: dict[str, TopicSeen]) -> TopicPlan:
    """What to do so that ``seen`` matches ``want``, never shrinking a topic."""
    plan = TopicPlan()
    for w in want:
        s = seen.get(w.name)
        if s is None:
            plan.create.append(w)
            continue
        plan.adopt.append(w.name)
        if s.partitions < w.partitions:
            plan.grow.append((w.name, s.partitions, w.partitions))
        elif s.partitions > w.partitions:
            plan.refused_shrinks.append((w.name, s.partitions, w.partitions))
        if s.retention_ms is not None and s.retention_ms != w.retention_ms:
            plan.retention.append((w.name, w.retention_ms))
    return plan
