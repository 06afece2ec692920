"""The evaluator's settings: its options, what it takes from a PipelineConfig (rules, engine
settings, which fields need new clients) and the options of its Kafka and Redis clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from alertpipe.workers.config import (
    OFFSET_RESET,
    PipelineConfig,
    consumer_group,
    kafka_options,
    parse_duration,
)
from alertpipe.workers.errors import RuleCompileError
from alertpipe.workers.pii import policy_of as pii_policy
from alertpipe.workers.rules import CompiledRule, compile_rule
from alertpipe.workers.rules.engine import EngineSettings
from alertpipe.workers.rules.schema_fields import schema_field_errors
from alertpipe.workers.secrets import SecretResolver

__all__ = ["EvaluatorOptions", "compile_rules", "connection", "engine_settings", "evaluator_kafka_options",
           "redis_client"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvaluatorOptions:
    batch_size: int = 5000
    poll_timeout: float = 0.1  # the wait for a batch's first record (the rest is what is fetched already)
    checkpoint_interval: float = 1.0
    group_id: str | None = None
    instance_id: str | None = None  # static group membership: a restart takes its partitions back at once
    session_timeout_ms: int = 10_000
    dedup: bool = True  # off only where the source is known not to replay (benchmarks)
    dedup_depth: int = 4  # consumed batches whose dedup round trip may be in flight at once
    housekeeping_interval: float = 1.0
    linger_ms: int = 1  # the producer's: alerts waited up to 5 ms for company before (bench/e2e)


def compile_rules(cfg: PipelineConfig, now: datetime | None = None) -> list[CompiledRule]:
    """The enabled rules of a config; one that does not compile is logged and skipped."""
    now = now or datetime.now(UTC)
    disabled = {k.name for k in cfg.kill_switches.disabled_rules if k.active(now)}
    out = []
    for entry in cfg.rules:
        if entry.name in disabled:
            continue
        try:
            rule = compile_rule(entry.name, entry.spec, tables=cfg.lookups.tables)
            unknown = schema_field_errors(rule, cfg.event_schema)
            if unknown:
                raise RuleCompileError(unknown)
            out.append(rule)
        except RuleCompileError as exc:
            logger.error("rule %s does not compile, skipped: %s", entry.name, exc)
    return out


def engine_settings(cfg: PipelineConfig) -> EngineSettings:
    # a device's reorder state lives as long as its dedup keys: past that a replay is new anyway
    return EngineSettings(cfg.tenant, cfg.pipeline, round(parse_duration(cfg.allowed_lateness) * 1000),
                          cfg.revision, device_ttl_ms=round(parse_duration(cfg.dedup_ttl) * 1000),
                          repartition=cfg.kafka.topics.repartition is not None, pii=pii_policy(cfg))


def connection(cfg: PipelineConfig) -> tuple[Any, ...]:
    """The fields whose change needs new clients (a new Evaluator)."""
    # the track's group and start position, not its ranges: a step changes ranges in place
    track = (cfg.track.consumer_group, cfg.track.start_at) if cfg.track else (None, "earliest")
    return (cfg.kafka.bootstrap_servers, cfg.kafka.topics, tuple(sorted(cfg.kafka.client_options.items())),
            cfg.kafka.credentials_secret_ref, cfg.redis, track)


def evaluator_kafka_options(cfg: PipelineConfig, opts: EvaluatorOptions, secrets: SecretResolver, *,
                            producer: bool) -> dict[str, Any]:
    k = cfg.kafka
    ref = k.credentials_secret_ref
    out = kafka_options(k, secrets.key_of(ref.name) if ref is not None else None)
    if producer:
        out.update({"linger.ms": opts.linger_ms, "compression.type": "lz4",
                    "client.id": "alertpipe-evaluator", "enable.idempotence": True, "acks": "all"})
        return out
    track = cfg.track
    group = (opts.group_id or (track.consumer_group if track else None)
             or consumer_group(cfg.tenant, cfg.pipeline, "evaluator"))
    out.update({
        "group.id": group,
        "client.id": "alertpipe-evaluator",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": track.start_at if track else OFFSET_RESET,
        "partition.assignment.strategy": "range",
        "session.timeout.ms": opts.session_timeout_ms,
        "fetch.max.bytes": 52_428_800,
        "queued.min.messages": 200_000,
    })
    if opts.instance_id:
        out["group.instance.id"] = opts.instance_id
    return out


def redis_client(cfg: PipelineConfig, secrets: SecretResolver) -> redis.Redis:
    url = cfg.redis.url
    if url is None and cfg.redis.url_secret_ref is not None:
        url = secrets.resolve(cfg.redis.url_secret_ref).get_secret_value()
    if url is None:
        raise ValueError("redis.url or redis.urlSecretRef is required")
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
