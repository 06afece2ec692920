"""The SMS (Twilio Messages API shaped) and mobile push (FCM HTTP v1 shaped) channel models.

Kept beside models.py rather than in it: the two kinds carry their own API's identifiers (an
Account SID, E.164 numbers, a Firebase project, registration tokens) and checks. ChannelSpec in
models.py holds them like the other kinds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from alertpipe.workers.config.base import Model
from alertpipe.workers.config.durations import Duration
from alertpipe.workers.config.refs import SecretKeyRef

__all__ = ["PushChannel", "SmsChannel"]

E164 = Annotated[
    str, Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="A phone number in E.164 form (+15551234567).")
]


class SmsChannel(Model):
    """Twilio Messages API: one POST per recipient, HTTP basic auth (Account SID, auth token)."""

    account_sid: str = Field(
        pattern=r"^AC[0-9a-fA-F]{32}$", description="Account SID (AC + 32 hex digits); the API user name."
    )
    auth_token_secret_ref: SecretKeyRef = Field(description="Secret holding the account's auth token.")
    from_number: E164 | None = Field(None, alias="from", description="Sender number (E.164).")
    messaging_service_sid: str | None = Field(
        None, pattern=r"^MG[0-9a-fA-F]{32}$", description="Messaging Service SID instead of a sender number."
    )
    to: list[E164] = Field(min_length=1, max_length=20, description="Recipient numbers (E.164).")
    url: str = Field(
        "https://api.twilio.com",
        max_length=2048,
        pattern=r"^https?://",
        description="API base URL (override for tests or a proxy); /2010-04-01/Accounts/... is appended.",
    )
    max_body_chars: int = Field(
        320, ge=20, le=1600, description="Text longer than this is clipped (the API allows 1600)."
    )
    timeout: Duration = Field("10s", description="Per-request timeout.")

    @model_validator(mode="after")
    def _one_sender(self) -> SmsChannel:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("sms must set exactly one of from, messagingServiceSid")
        return self


class PushChannel(Model):
    """FCM HTTP v1 ``messages:send``: one POST per registration token (or one for a topic), bearer auth."""

    project_id: str = Field(
        min_length=6,
        max_length=30,
        pattern=r"^[a-z][a-z0-9-]*[a-z0-9]$",
        description="Firebase project id; the URL is /v1/projects/<projectId>/messages:send.",
    )
    service_account_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret holding a service-account key file (JSON): the deliverer exchanges it for"
        " OAuth2 access tokens (JWT bearer grant at its token_uri) and caches each until shortly before"
        " it expires.",
    )
    access_token_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Instead of serviceAccountSecretRef: a Secret holding an OAuth2 access token (looked"
        " up per send: a refresher may rotate it).",
    )
    tokens: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Device registration tokens; each gets its own message.",
    )
    topic: str | None = Field(
        None, pattern=r"^[a-zA-Z0-9-_.~%]{1,900}$", description="An FCM topic instead of tokens."
    )
    url: str = Field(
        "https://fcm.googleapis.com",
        max_length=2048,
        pattern=r"^https?://",
        description="API base URL (override for tests or a proxy).",
    )
    timeout: Duration = Field("10s", description="Per-request timeout.")

    @model_validator(mode="after")
    def _one_target(self) -> PushChannel:
        if bool(self.tokens) == (self.topic is not None):
            raise ValueError("push must set exactly one of tokens, topic")
        if (self.service_account_secret_ref is None) == (self.access_token_secret_ref is None):
            raise ValueError("push must set exactly one of serviceAccountSecretRef, accessTokenSecretRef")
        return self
