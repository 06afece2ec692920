"""The contract's channels: where a rule's alerts go (webhook, Slack, PagerDuty, email, SMS, push)
and each channel's retry policy, rate limit and circuit breaker settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.durations import Duration
from alertpipe.workers.config.mobile import PushChannel, SmsChannel
from alertpipe.workers.config.refs import Name, SecretKeyRef

__all__ = [
    "CHANNEL_KINDS", "ChannelSpec", "EmailChannel", "PagerDutyChannel", "RetryPolicy", "SlackChannel",
    "WebhookChannel",
]


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


