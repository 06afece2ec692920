"""The evaluator's collaborators at its seams: the consumer of the events topic, the producer of
alerts, late events and dead letters, and the store of dedup keys and checkpoints.

``EvaluatorClients.real`` builds the production ones (confluent-kafka, Redis); a unit test hands the
Evaluator in-memory ones with the same methods (tests/unit/evaluator/test_evaluator_seams.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from confluent_kafka import Consumer, Producer

from alertpipe.workers.config import GROUPS_STAGE_SUFFIX, PipelineConfig
from alertpipe.workers.evaluator.group_worker import GroupWorker
from alertpipe.workers.evaluator.links import STATS_INTERVAL_MS, LinkHealth
from alertpipe.workers.evaluator.lookup_store import RedisLookupStore
from alertpipe.workers.evaluator.lookups import LookupStore
from alertpipe.workers.evaluator.metrics import EvaluatorMetrics
from alertpipe.workers.evaluator.redis_state import RedisState
from alertpipe.workers.evaluator.settings import EvaluatorOptions, evaluator_kafka_options, redis_client
from alertpipe.workers.evaluator.stage import Outputs
from alertpipe.workers.rules.engine import Engine
from alertpipe.workers.secrets import SecretResolver

__all__ = ["EvaluatorClients", "StateStore", "group_worker", "stage_two_consumer"]


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
    links: LinkHealth | None = field(default=None)  # is each events partition's leader answering
    lookups: LookupStore = field(default_factory=lambda: NO_ROWS)  # lookup tables' rows (lookup_store.py)

    @classmethod
    def real(cls, cfg: PipelineConfig, opts: EvaluatorOptions, secrets: SecretResolver) -> EvaluatorClients:
        client = redis_client(cfg, secrets)
        links = LinkHealth(cfg.kafka.topics.events)
        options = evaluator_kafka_options(cfg, opts, secrets, producer=False)
        options.update({"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": links.on_stats})
        return cls(
            consumer=Consumer(options),
            producer=Producer(evaluator_kafka_options(cfg, opts, secrets, producer=True)),
            state=RedisState(client, cfg.redis.key_prefix, cfg.kafka.topics.events),
            redis=client,
            links=links,
            lookups=RedisLookupStore(client, cfg.redis.lookups_prefix),
        )


def stage_two_consumer(cfg: PipelineConfig, opts: EvaluatorOptions, secrets: SecretResolver) -> Consumer:
    """The repartition stage's consumer: the evaluator's group (and member id) with ``-groups``."""
    options = evaluator_kafka_options(cfg, opts, secrets, producer=False)
    options["group.id"] += GROUPS_STAGE_SUFFIX
    if "group.instance.id" in options:
        options["group.instance.id"] += GROUPS_STAGE_SUFFIX
    return Consumer(options)


def group_worker(cfg: PipelineConfig, opts: EvaluatorOptions, secrets: SecretResolver,
                 client: redis.Redis | None, outputs: Outputs, writer: ThreadPoolExecutor, engine: Engine,
                 metrics: EvaluatorMetrics,
                 clock: Callable[[], float]) -> GroupWorker:
    """Stage 2 (rules whose groups span devices): a second consumer, on the repartition topic."""
    if client is None:
        raise ValueError("the repartition stage needs a Redis client (EvaluatorClients.redis)")
    topics = cfg.kafka.topics
    return GroupWorker(
        topic=str(topics.repartition), events_topic=topics.events, late_topic=topics.late,
        alerts_topic=topics.alerts, consumer=stage_two_consumer(cfg, opts, secrets), outputs=outputs,
        writer=writer, redis_client=client, key_prefix=cfg.redis.key_prefix, settings=engine.settings,
        rules=engine.rules.values(), metrics=metrics, batch_size=opts.batch_size,
        checkpoint_interval=opts.checkpoint_interval, clock=clock)
