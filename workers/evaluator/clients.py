"""The evaluator's collaborators at its seams: the consumer of the events topic, the producer of
alerts, late events and dead letters, and the store of dedup keys and checkpoints.

``EvaluatorClients.real`` builds the production ones (confluent-kafka, Redis); a unit test hands the
Evaluator in-memory ones with the same methods (tests/unit/evaluator/test_evaluator_seams.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from confluent_kafka import Consumer, Producer

from alertpipe.workers.config import GROUPS_STAGE_SUFFIX, PipelineConfig
from alertpipe.workers.evaluator.lookup_store import RedisLookupStore
from alertpipe.workers.evaluator.lookups import LookupStore
from alertpipe.workers.evaluator.redis_state import RedisState
from alertpipe.workers.evaluator.settings import EvaluatorOptions, evaluator_kafka_options, redis_client
from alertpipe.workers.secrets import SecretResolver

__all__ = ["EvaluatorClients", "StateStore", "stage_two_consumer"]


class StateStore(Protocol):
    """What the evaluator asks of Redis (``RedisState``): dedup, checkpoint chains, gap reports."""

    def check(self, keys: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
              ttl_s: int) -> bytes: ...

    def load_chain(self, partition: int) -> tuple[bytes, list[bytes]] | None: ...

    def save_chain(self, blobs: Iterable[tuple[int, bool, bytes]], gaps: Sequence[dict[str, Any]] = ()
                   ) -> None: ...


class _NoRows:
    """A lookup store without tables: every row is absent."""

    def fetch(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
        return [None] * len(keys)


NO_ROWS = _NoRows()


@dataclass
class EvaluatorClients:
    consumer: Any  # the events topic's (a confluent_kafka.Consumer)
    producer: Any  # alerts, late and dead-letter records (a confluent_kafka.Producer)
    state: StateStore
    redis: redis.Redis | None = None  # stage 2's state (the repartition stage needs a real Redis)
    lookups: LookupStore = field(default_factory=lambda: NO_ROWS)  # lookup tables' rows (lookup_store.py)

    @classmethod
    def real(cls, cfg: PipelineConfig, opts: EvaluatorOptions, secrets: SecretResolver) -> EvaluatorClients:
        client = redis_client(cfg, secrets)
        return cls(
            consumer=Consumer(evaluator_kafka_options(cfg, opts, secrets, producer=False)),
            producer=Producer(evaluator_kafka_options(cfg, opts, secrets, producer=True)),
            state=RedisState(client, cfg.redis.key_prefix, cfg.kafka.topics.events),
            redis=client,
            lookups=RedisLookupStore(client, cfg.redis.lookups_prefix),
        )


def stage_two_consumer(cfg: PipelineConfig, opts: EvaluatorOptions, secrets: SecretResolver) -> Consumer:
    """The repartition stage's consumer: the evaluator's group (and member id) with ``-groups``."""
    options = evaluator_kafka_options(cfg, opts, secrets, producer=False)
    options["group.id"] += GROUPS_STAGE_SUFFIX
    if "group.instance.id" in options:
        options["group.instance.id"] += GROUPS_STAGE_SUFFIX
    return Consumer(options)
