"""The CRD models: AlertPipeline and AlertRule spec and status, as pydantic models.

These models are the single source of truth for crds/*.yaml (``alertpipe crds`` generates them,
see crdgen.py). The AlertRule spec IS the contract's ``RuleSpec``, and channels and kill switches
are the contract's models too, so a field added there reaches the CRDs without touching this file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from alertpipe.operator.autoscaling import (
    AutoscalingSpec,
    RoleScalingStatus,
    ScalingBehavior,
    ScalingPolicy,
)
from alertpipe.operator.ingest_models import IngestSpec
from alertpipe.operator.rollout_models import RolloutSpec
from alertpipe.operator.slo_models import SLOSpec, SLOStatus
from alertpipe.operator.status_models import (
    AlertPipelineStatus,
    AlertRuleStatus,
    Condition,
    RuleCounts,
    RuleLiveness,
)
from alertpipe.workers.config.base import Model
from alertpipe.workers.config.durations import Duration
from alertpipe.workers.config.lookups import LookupSettings
from alertpipe.workers.config.models import (
    ChannelSpec,
    DeliverySettings,
    KillSwitches,
    PiiSpec,
    RuleSpec,
    SchemaSpec,
    SecretKeyRef,
    TracingSpec,
)

__all__ = [
    "GROUP",
    "PIPELINE_PLURAL",
    "ROLES",
    "RULE_PLURAL",
    "VERSION",
    "AlertPipelineSpec",
    "HistorySpec",
    "IngestSpec",
    "AlertPipelineStatus",
    "AlertRuleSpec",
    "AlertRuleStatus",
    "AutoscalingSpec",
    "Condition",
    "KafkaSpec",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LatencySettings",
    "LocalObjectReference",
    "PipelineTopics",
    "PullPolicy",
    "RedisSpec",
    "ResourceRequirements",
    "Role",
    "RoleScalingStatus",
    "RuleCounts",
    "RuleLiveness",
    "SLOSpec",
    "SLOStatus",
    "ScaledWorkloadSpec",
    "ScalingBehavior",
    "ScalingPolicy",
    "TopicSpec",
    "TracingSpec",
    "WorkloadSpec",
]

GROUP = "alertpipe.io"
VERSION = "v1alpha1"
PIPELINE_PLURAL = "alertpipelines"
RULE_PLURAL = "alertrules"

Role = Literal["ingestor", "evaluator", "deliverer", "history"]
ROLES: tuple[Role, ...] = ("ingestor", "evaluator", "deliverer", "history")

Quantity = Annotated[
    str,
    Field(
        max_length=64,
        pattern=r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i?|[mkMGTPE])?$",
        description="A Kubernetes quantity, e.g. 100m, 0.5, 256Mi, 1Gi.",
    ),
]
TopicName = Annotated[
    str, Field(min_length=1, max_length=249, pattern=r"^[a-zA-Z0-9._-]+$", description="Kafka topic name.")
]


# --- kafka ------------------------------------------------------------------------------------


class TopicSpec(Model):
    """One Kafka topic of the pipeline: its name (derived when omitted), partitions and retention."""

    name: TopicName | None = Field(
        None, description="Topic name; omitted means <namespace>.<pipeline>.<purpose>."
    )
    partitions: int = Field(
        6, ge=1, le=10_000, description="Partitions; can grow, never shrink (Kafka cannot)."
    )
    retention: Duration = Field("7d", description="How long Kafka keeps records (retention.ms).")


class PipelineTopics(Model):
    """The seven topics of a pipeline."""

    events: TopicSpec = Field(default_factory=TopicSpec, description="Input events (ingestor writes).")
    alerts: TopicSpec = Field(default_factory=TopicSpec, description="Alerts (evaluator writes).")
    late: TopicSpec = Field(
        default_factory=lambda: TopicSpec(partitions=1), description="Events later than the lateness."
    )
    dead_letter: TopicSpec = Field(
        default_factory=lambda: TopicSpec(partitions=1, retention="30d"),
        description="Deliveries that gave up.",
    )
    audit: TopicSpec = Field(
        default_factory=lambda: TopicSpec(partitions=1, retention="30d"), description="Delivery audit log."
    )
    retry: TopicSpec = Field(
        default_factory=TopicSpec,
        description="Deliveries parked for a later attempt; keep retention above every channel's maxAge.",
    )
    repartition: TopicSpec = Field(
        default_factory=TopicSpec,
        description="Events of rules whose group key spans devices (by without deviceId), keyed by rule"
        " and group key; its partitions are the parallelism of those rules.",
    )


class KafkaSpec(Model):
    """The tenant's Kafka cluster."""

    bootstrap_servers: str = Field(min_length=1, max_length=4096, description="host:port[,host:port...]")
    credentials_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret with sasl.username / sasl.password keys (SASL/PLAIN or SCRAM)."
    )
    client_options: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka options for every client (no secrets here)."
    )
    topics: PipelineTopics = Field(default_factory=PipelineTopics, description="Topic settings.")


# --- redis ------------------------------------------------------------------------------------


class RedisSpec(Model):
    """Redis for dedup keys, state checkpoints and delivery claims: a URL or a Secret holding it."""

    url: str | None = Field(None, max_length=2048, pattern=r"^rediss?://", description="redis://host:port/db")
    url_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding the URL.")
    key_prefix: str | None = Field(
        None, max_length=253, description="Key prefix; omitted means <namespace>:<pipeline>:."
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> RedisSpec:
        if (self.url is None) == (self.url_secret_ref is None):
            raise ValueError("redis must set exactly one of url, urlSecretRef")
        return self


# --- workloads --------------------------------------------------------------------------------


class ResourceRequirements(Model):
    """CPU and memory requests and limits of a worker container."""

    requests: dict[str, Quantity] = Field(default_factory=dict, description="e.g. cpu: 100m, memory: 128Mi")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="e.g. memory: 512Mi")


class Toleration(Model):
    """A pod toleration (core/v1 Toleration), so worker pods may land on tainted nodes."""

    key: str | None = Field(None, max_length=317, description="Taint key; omitted with Exists means all.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; omitted means all effects."
    )
    toleration_seconds: int | None = Field(None, ge=0, description="How long a NoExecute taint is tolerated.")


PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class LocalObjectReference(Model):
    """A Secret in the pipeline's namespace, by name."""

    name: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="Secret name."
    )


class WorkloadSpec(Model):
    """One worker role's Deployment."""

    enabled: bool = Field(True, description="Run this role at all.")
    replicas: int = Field(1, ge=0, le=1000, description="Pods of this role.")
    image: str | None = Field(
        None, max_length=1024, description="Image override; omitted means the operator's worker image."
    )
    image_pull_policy: PullPolicy | None = Field(
        None, description="Always, IfNotPresent or Never; omitted means the operator's --image-pull-policy."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Container resources."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels this role's pods must match (pod nodeSelector)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints this role's pods tolerate."
    )


class LatencySettings(Model):
    """Hot-path settings of the worker processes. The defaults are what bench/e2e measured best on
    the way event -> page (docs/latency.md has the budget per hop)."""

    linger_ms: int = Field(
        1, ge=0, le=1000,
        description="How long the ingestor's and the evaluator's producers hold a record for company"
                    " (linger.ms): more batches fewer requests, every record waits up to this long.",
    )
    checkpoint_interval: Duration = Field(
        "1s",
        description="Evaluator: time between state checkpoints (off the hot path but for the snapshot);"
                    " longer means fewer Redis writes and a longer replay after a crash.",
    )


class HistorySpec(WorkloadSpec):
    """The notification history sink: the deliverer's decision log (the audit topic) kept in
    PostgreSQL, for `alertpipe history why` (docs/history.md). Off unless enabled."""

    enabled: bool = Field(False, description="Run the history sink (needs dsnSecretRef).")
    dsn_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the PostgreSQL connection string (libpq DSN or URL)."
    )
    retention_days: int = Field(30, ge=1, le=3650, description="Days of history kept (whole UTC days).")

    @model_validator(mode="after")
    def _dsn_when_enabled(self) -> HistorySpec:
        if self.enabled and self.dsn_secret_ref is None:
            raise ValueError("history.enabled needs history.dsnSecretRef (the Secret key with the DSN)")
        return self


class ScaledWorkloadSpec(WorkloadSpec):
    """A role that consumes Kafka (evaluator, deliverer): a Deployment that can scale on its lag."""

    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec,
        description="Scale on consumer lag between minReplicas and maxReplicas (replicas is then ignored).",
    )


# --- selector ---------------------------------------------------------------------------------


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How to match.")
    values: list[str] = Field(
        default_factory=list, max_length=64, description="Values for In / NotIn; empty otherwise."
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(Model):
    """Which AlertRules of the namespace feed this pipeline (as a Kubernetes label selector)."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels a rule must have.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Set-based requirements."
    )


# --- the kinds --------------------------------------------------------------------------------


class AlertPipelineSpec(Model):
    """A tenant's alert pipeline: Kafka topics, Redis, three worker roles, channels and rules."""

    kafka: KafkaSpec = Field(description="The tenant's Kafka cluster and topics.")
    redis: RedisSpec = Field(description="Redis for dedup, state and delivery claims.")
    ingestor: WorkloadSpec = Field(default_factory=WorkloadSpec, description="HTTP ingestor.")
    evaluator: ScaledWorkloadSpec = Field(default_factory=ScaledWorkloadSpec, description="Rule evaluator.")
    deliverer: ScaledWorkloadSpec = Field(default_factory=ScaledWorkloadSpec, description="Alert deliverer.")
    history: HistorySpec = Field(
        default_factory=HistorySpec, description="Notification history sink (decision log → PostgreSQL)."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets (this namespace) to pull the worker images; added to the operator's own.",
    )
    channels: list[ChannelSpec] = Field(
        default_factory=list, max_length=64, description="Named destinations rules can notify."
    )
    rule_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="AlertRules (same namespace) this pipeline runs; empty selects every rule.",
    )
    allowed_lateness: Duration = Field("5s", description="Events later than this go to the late topic.")
    idle_timeout: Duration = Field(
        "30s", description="A partition idle this long stops holding the watermark."
    )
    dedup_ttl: Duration = Field("24h", description="How long input (deviceId, seq) pairs are remembered.")
    ingest: IngestSpec = Field(
        default_factory=IngestSpec, description="Ingestor settings (limits, keys, gRPC)."
    )
    delivery: DeliverySettings = Field(default_factory=DeliverySettings, description="Deliverer settings.")
    latency: LatencySettings = Field(
        default_factory=LatencySettings, description="Producer linger and checkpoint interval of the workers."
    )
    kill_switches: KillSwitches = Field(
        default_factory=KillSwitches, description="Emergency stops, each with a reason and optional expiry."
    )
    pii: PiiSpec | None = Field(
        None, description="Event fields that are personal data: masked in logs, dead letters, audit, alerts."
    )
    event_schema: SchemaSpec | None = Field(
        None,
        alias="schema",
        description="JSON Schema per event type (versioned), checked at ingest; changes stay compatible.",
    )
    lookups: LookupSettings = Field(
        default_factory=LookupSettings,
        description="Lookup tables rules read (lookup('thresholds', deviceId).max): cache TTL and size,"
        " the tables rules may name. Rows live in Redis (alertpipe lookup load).",
    )
    rollout: RolloutSpec | None = Field(
        None, description="Canary rollout of rule and image changes; omitted: changes apply at once."
    )
    slo: SLOSpec | None = Field(
        None, description="The tenant's objective (e2e latency p99, delivery success); status.slo and"
        " the SLOMet condition say whether it is met. Omitted: not measured."
    )
    tracing: TracingSpec | None = Field(
        None, description="OpenTelemetry traces across ingest, evaluation and delivery (OTLP/HTTP);"
        " the trace context rides in Kafka record headers. Omitted: off."
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        "Retain",
        description="Retain keeps the Kafka topics when the pipeline is deleted; Delete removes them.",
    )

    @model_validator(mode="after")
    def _channel_names(self) -> AlertPipelineSpec:
        names = [c.name for c in self.channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique (repeated: {', '.join(dupes)})")
        for i, c in enumerate(self.channels):
            if c.fallback is not None and c.fallback not in names:
                raise ValueError(f"channels[{i}].fallback names unknown channel {c.fallback!r}")
        for i, m in enumerate(self.kill_switches.muted_channels):
            if m.name not in names:
                raise ValueError(f"killSwitches.mutedChannels[{i}] names unknown channel {m.name!r}")
        return self


AlertRuleSpec = RuleSpec
"""The AlertRule spec is the contract's RuleSpec, unchanged."""
