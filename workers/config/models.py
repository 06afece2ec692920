"""The contract between the operator and the workers: the PipelineConfig document and its parts.

The operator compiles one AlertPipeline plus the AlertRules it selects into a PipelineConfig and
writes it (JSON) into the ConfigMap ``<pipeline>-config``; workers load it and swap revisions in
without restarting. The same models are the schema of the CRDs' spec fields (the operator's CRD
generator reads them), so a field is described once, here. Field names are camelCase on the wire,
as Kubernetes users expect; every model is frozen and forbids unknown fields.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, Field, model_validator

from alertpipe.workers.config.base import Model as Model  # re-exported: models import it from here
from alertpipe.workers.config.durations import Duration
from alertpipe.workers.config.lookups import LookupSettings
from alertpipe.workers.config.mobile import PushChannel, SmsChannel
from alertpipe.workers.config.privacy import PiiSpec
from alertpipe.workers.config.refs import Name, SecretKeyRef
from alertpipe.workers.config.schemas import EventSchema, SchemaSpec
from alertpipe.workers.config.tracing import TracingSpec
from alertpipe.workers.config.tracks import Track

__all__ = [
    "CHANNEL_KINDS",
    "AbsenceSpec",
    "AggregateSpec",
    "ChannelSpec",
    "DeliverySettings",
    "EmailChannel",
    "EventSchema",
    "IngestSettings",
    "KafkaSettings",
    "KillSwitch",
    "KillSwitches",
    "NamedKillSwitch",
    "PagerDutyChannel",
    "PiiSpec",
    "PipelineConfig",
    "PushChannel",
    "RedisSettings",
    "RetryPolicy",
    "RuleEntry",
    "RuleSelect",
    "RuleSpec",
    "RuleTest",
    "SchemaSpec",
    "SecretKeyRef",
    "SlackChannel",
    "SmsChannel",
    "ThresholdSpec",
    "Topics",
    "TracingSpec",
    "WebhookChannel",
]

CelExpr = Annotated[str, Field(min_length=1, max_length=4096)]


# --- channels ----------------------------------------------------------------------------------


class RetryPolicy(Model):
    """How long a delivery keeps trying before it goes to the dead-letter topic."""

    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before dead-lettering.")
    max_age: Duration = Field("15m", description="Give up once an alert is this old.")
    initial_backoff: Duration = Field("200ms", description="First backoff (full jitter).")
    max_backoff: Duration = Field("30s", description="Upper bound of one backoff.")


class WebhookChannel(Model):
    """POST the alert as JSON, signed with HMAC-SHA256 (header X-Alertpipe-Signature)."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://", description="Target URL.")
    signing_secret_ref: SecretKeyRef | None = Field(None, description="HMAC signing secret.")
    timeout: Duration = Field("5s", description="Per-request timeout.")


class SlackChannel(Model):
    """Slack incoming webhook; the webhook URL is a secret."""

    webhook_url_secret_ref: SecretKeyRef = Field(description="Secret holding the webhook URL.")


class PagerDutyChannel(Model):
    """PagerDuty Events API v2: trigger and resolve, dedup_key = alert id."""

    routing_key_secret_ref: SecretKeyRef = Field(description="Secret holding the routing key.")
    url: str = Field(
        "https://events.pagerduty.com/v2/enqueue",
        pattern=r"^https?://",
        description="Events API endpoint (override for tests or a proxy).",
    )


class EmailChannel(Model):
    """SMTP delivery."""

    host: str = Field(min_length=1, description="SMTP server host.")
    port: int = Field(587, ge=1, le=65535, description="SMTP server port.")
    starttls: bool = Field(True, description="Upgrade the connection with STARTTLS.")
    from_address: str = Field(alias="from", min_length=3, description="Sender address.")
    to: list[str] = Field(min_length=1, description="Recipient addresses.")
    username_secret_ref: SecretKeyRef | None = Field(None, description="SMTP user name.")
    password_secret_ref: SecretKeyRef | None = Field(None, description="SMTP password.")


CHANNEL_KINDS = ("webhook", "slack", "pagerduty", "email", "sms", "push")


class ChannelSpec(Model):
    """A named destination; exactly one of webhook, slack, pagerduty, email, sms, push is set."""

    name: Name = Field(description="Name that rules use in spec.channels.")
    webhook: WebhookChannel | None = None
    slack: SlackChannel | None = None
    pagerduty: PagerDutyChannel | None = None
    email: EmailChannel | None = None
    sms: SmsChannel | None = None
    push: PushChannel | None = None
    rate_limit_per_second: float = Field(50.0, gt=0, description="Token-bucket rate limit.")
    max_concurrency: int = Field(8, ge=1, le=1024, description="Sends in flight at once.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry budget.")
    fallback: Name | None = Field(None, description="Channel tried once this one gives up.")
    include_pii: bool = Field(False, description="Send the raw values of spec.pii fields to this channel.")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ChannelSpec:
        kinds = [k for k in CHANNEL_KINDS if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                f"channel {self.name!r} must set exactly one of {', '.join(CHANNEL_KINDS)}"
                f" (found {', '.join(kinds) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CHANNEL_KINDS if getattr(self, k))


# --- rules -------------------------------------------------------------------------------------


class RuleSelect(Model):
    """Which events a rule looks at: event types (indexed) and an optional CEL filter."""

    types: list[str] = Field(
        default_factory=list, description="Event types to consider; empty means every type."
    )
    filter: CelExpr | None = Field(None, description="CEL expression over the event's fields.")


class ThresholdSpec(Model):
    """Fires on single events: the group's latest event satisfies the CEL condition."""

    condition: CelExpr = Field(description="CEL over the event, e.g. `value > 80`.")


AggregateFn = Literal["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"]


class AggregateSpec(Model):
    """A windowed aggregate per group, compared by a CEL condition over `value`."""

    fn: AggregateFn = Field(description="Aggregate function.")
    field: str | None = Field(None, description="Numeric event field; not needed for count.")
    window: Duration = Field(description="Window length.")
    every: Duration | None = Field(None, description="Slide; omitted means tumbling.")
    condition: CelExpr = Field(description="CEL over `value` (the aggregate), e.g. `value > 75`.")


class AbsenceSpec(Model):
    """Fires when a group has sent no selected event for a duration (judged by event time)."""

    for_: Duration = Field(alias="for", description="Silence that fires the alert.")


Severity = Literal["critical", "warning", "info"]


class RuleTest(Model):
    """An offline test: input events and the alerts the rule must produce (`alertpipe rules test`)."""

    name: str = Field(min_length=1, description="Test name.")
    events: list[dict[str, Any]] = Field(description="Input events, in arrival order.")
    expect: list[dict[str, Any]] = Field(
        default_factory=list, description="Expected alert transitions (status, labels, ...)."
    )
    lookups: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="Lookup tables the rule reads: {table: {key: {field: value}}}."
    )


class RuleSpec(Model):
    """What an AlertRule says: which events, which condition, for how long, who is told."""

    select: RuleSelect = Field(default_factory=RuleSelect, description="Events this rule reads.")
    by: list[str] = Field(
        default_factory=lambda: ["deviceId"], description="Group-key fields; one alert per group."
    )
    threshold: ThresholdSpec | None = None
    aggregate: AggregateSpec | None = None
    absence: AbsenceSpec | None = None
    for_: Duration | None = Field(
        None, alias="for", description="The condition must hold this long before firing."
    )
    severity: Severity = Field("warning", description="critical, warning or info.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to alerts.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Templates, e.g. summary: 'CPU {{ value }} on {{ deviceId }}'."
    )
    channels: list[Name] = Field(default_factory=list, description="Pipeline channels to notify.")
    tests: list[RuleTest] = Field(default_factory=list, description="Offline rule tests.")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> RuleSpec:
        kinds = [k for k in ("threshold", "aggregate", "absence") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                "a rule must set exactly one of threshold, aggregate, absence"
                f" (found {', '.join(kinds) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("threshold", "aggregate", "absence") if getattr(self, k))


class RuleEntry(Model):
    """One selected, valid rule as it travels in the config (``name`` is the AlertRule's name)."""

    name: Name
    spec: RuleSpec


# --- kill switches -----------------------------------------------------------------------------


class KillSwitch(Model):
    """A switch that is on while it is present (and, with ``until``, not yet expired)."""

    reason: str = Field(min_length=1, max_length=1024, description="Why; shown in status.")
    until: datetime | None = Field(None, description="Expiry (RFC 3339); omitted means until removed.")

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


class NamedKillSwitch(KillSwitch):
    """A kill switch aimed at one rule or channel."""

    name: Name = Field(description="Rule or channel name.")


class KillSwitches(Model):
    """Stop evaluation, stop delivery (alerts wait in Kafka), disable rules, mute channels."""

    stop_evaluation: KillSwitch | None = None
    stop_delivery: KillSwitch | None = None
    disabled_rules: list[NamedKillSwitch] = Field(default_factory=list)
    muted_channels: list[NamedKillSwitch] = Field(default_factory=list)


# --- infrastructure ----------------------------------------------------------------------------


class Topics(Model):
    """Kafka topic names of one pipeline."""

    events: str
    alerts: str
    late: str
    dead_letter: str
    audit: str
    retry: str | None = Field(
        None,
        description="Deliveries waiting for a later attempt (deliverer); unset: retries wait in memory.",
    )
    repartition: str | None = Field(
        None,
        description="Events of rules whose groups span devices, keyed by (rule, group key) (evaluator);"
        " unset: such rules are evaluated per events partition.",
    )


class KafkaSettings(Model):
    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port...]")
    topics: Topics
    client_options: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka options passed to every client."
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret with sasl.username / sasl.password keys."
    )


class RedisSettings(Model):
    url: str | None = Field(None, pattern=r"^rediss?://", description="redis://host:port/db")
    url_secret_ref: SecretKeyRef | None = Field(None, description="Secret holding the URL.")
    key_prefix: str = Field(description="Prefix of every key this pipeline writes.")
    lookup_prefix: str | None = Field(
        None, description="Prefix of the lookup tables' keys (unset: key_prefix). A canary track keeps"
        " the stable track's, so both read the same tables.",
    )

    @property
    def lookups_prefix(self) -> str:
        return self.lookup_prefix if self.lookup_prefix is not None else self.key_prefix


class IngestSettings(Model):
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger bodies get 413.")
    max_event_bytes: int = Field(
        524_288,
        ge=256,
        le=900_000,
        description="Larger events are rejected alone (Kafka refuses records of about 1 MB).",
    )
    max_future_skew: Duration = Field(
        "5m",
        description="Events whose ts is further ahead of the worker's clock are rejected (ingestor)"
        " or dead-lettered (evaluator): they would move the watermark and make others late.",
    )
    api_keys_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the tenant's API keys, one per line."
    )


def _cidr(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        why = f"{text!r} is not a network; write e.g. 127.0.0.0/8, 10.1.2.3/32 or ::1/128"
        raise ValueError(why) from None
    return text


Cidr = Annotated[str, AfterValidator(_cidr), Field(max_length=64)]


class DeliverySettings(Model):
    allow_private_networks: bool = Field(
        False,
        description="Allow webhook targets in loopback/private/link-local ranges (never the cloud"
        " metadata addresses: name those in allowedNetworks).",
    )
    allowed_networks: list[Cidr] = Field(
        default_factory=list,
        max_length=64,
        description="Networks (CIDR) webhook targets may be in although they are not public,"
        " e.g. 127.0.0.0/8 for a local receiver.",
    )


class PipelineConfig(Model):
    """Everything a worker needs to run one pipeline; ``revision`` hashes the rest."""

    tenant: str = Field(min_length=1, description="The tenant (the pipeline's namespace).")
    pipeline: Name
    kafka: KafkaSettings
    redis: RedisSettings
    allowed_lateness: Duration = "5s"
    idle_timeout: Duration = "30s"
    dedup_ttl: Duration = "24h"
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    channels: list[ChannelSpec] = Field(default_factory=list)
    rules: list[RuleEntry] = Field(default_factory=list)
    kill_switches: KillSwitches = Field(default_factory=KillSwitches)
    pii: PiiSpec | None = None
    event_schema: SchemaSpec | None = Field(None, alias="schema")
    lookups: LookupSettings = Field(default_factory=LookupSettings)
    tracing: TracingSpec | None = None  # spec.tracing: OTLP spans across the stages; None: off
    # a canary rollout's split of the keys (tracks.py); None: this evaluator owns every key
    track: Track | None = None
    revision: str = ""

    def content_revision(self) -> str:
        """A hash of everything but ``revision`` itself: same content, same revision."""
        body = self.model_dump(mode="json", by_alias=True, exclude={"revision"})
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def with_revision(self) -> PipelineConfig:
        return self.model_copy(update={"revision": self.content_revision()})

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_json(cls, data: bytes | str) -> PipelineConfig:
        return cls.model_validate(orjson.loads(data))

    def rules_revision(self) -> str:
        """A hash of the rules alone: what a canary rollout rolls out (the rest applies at once)."""
        return self.revision_of_rules(self.rules)

    @staticmethod
    def revision_of_rules(rules: list[RuleEntry]) -> str:
        body = [r.model_dump(mode="json", by_alias=True) for r in rules]
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def channel(self, name: str) -> ChannelSpec | None:
        return next((c for c in self.channels if c.name == name), None)

