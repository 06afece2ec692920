"""The root of alertpipe's exception tree, shared by the operator and every worker.

    AlertpipeError
    ├── ConfigError        a config document or resource is invalid; carries the field path
    ├── RuleCompileError   an AlertRule does not compile; carries every (path, reason) found
    └── DeliveryError      a send to a channel failed; says whether a retry may succeed

Every message is one line a user can act on.
"""

from __future__ import annotations

__all__ = ["AlertpipeError", "ConfigError", "DeliveryError", "RuleCompileError"]


class AlertpipeError(Exception):
    """Root of every error alertpipe raises on purpose."""


class ConfigError(AlertpipeError):
    """A configuration value is invalid; ``path`` names the field (``spec.channels[2].url``)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class RuleCompileError(AlertpipeError):
    """A rule does not compile; ``errors`` holds every (field path, reason) pair found."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{p}: {r}" for p, r in self.errors))


class DeliveryError(AlertpipeError):
    """A delivery attempt failed; ``retryable`` says whether trying again may succeed."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        super().__init__(reason)
