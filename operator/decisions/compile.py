"""Compiling one AlertPipeline and its selected, valid AlertRules into the PipelineConfig contract."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from alertpipe.operator.decisions.killswitches import active_switches
from alertpipe.operator.decisions.topics import topic_names
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.models import (
    KafkaSettings,
    PipelineConfig,
    RedisSettings,
    RuleEntry,
)

__all__ = ["CONFIG_KEY", "compile_config", "config_map_name", "default_key_prefix"]

CONFIG_KEY = "config.json"  # the data key workers read (alertpipe.workers.config.loaders.kube)


def config_map_name(pipeline: str) -> str:
    return f"{pipeline}-config"


def default_key_prefix(namespace: str, pipeline: str) -> str:
    return f"{namespace}:{pipeline}:"


def compile_config(
    namespace: str,
    name: str,
    spec: AlertPipelineSpec,
    rules: Sequence[RuleEntry],
    now: datetime,
) -> PipelineConfig:
    """The config document, with its content revision; rules sorted by name so order never matters.

    Only kill switches in force at ``now`` are included: an expired one changes the revision and so
    clears its effect in every worker.
    """
    config = PipelineConfig(
        tenant=namespace,
        pipeline=name,
        kafka=KafkaSettings(
            bootstrap_servers=spec.kafka.bootstrap_servers,
            topics=topic_names(namespace, name, spec.kafka),
            client_options=spec.kafka.client_options,
            credentials_secret_ref=spec.kafka.credentials_secret_ref,
        ),
        redis=RedisSettings(
            url=spec.redis.url,
            url_secret_ref=spec.redis.url_secret_ref,
            key_prefix=spec.redis.key_prefix or default_key_prefix(namespace, name),
            lookup_prefix=spec.redis.key_prefix or default_key_prefix(namespace, name),
        ),
        allowed_lateness=spec.allowed_lateness,
        idle_timeout=spec.idle_timeout,
        dedup_ttl=spec.dedup_ttl,
        ingest=spec.ingest.settings(),
        delivery=spec.delivery,
        channels=list(spec.channels),
        rules=sorted(rules, key=lambda r: r.name),
        kill_switches=active_switches(spec.kill_switches, now),
        pii=spec.pii,
        event_schema=spec.event_schema,
        lookups=spec.lookups,
        tracing=spec.tracing,
    )
    return config.with_revision()
