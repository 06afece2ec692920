"""The deliverer's own settings (command-line flags, not the pipeline's config): a frozen dataclass."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

__all__ = ["DelivererSettings"]


@dataclass(frozen=True)
class DelivererSettings:
    group_id: str | None = None  # default alertpipe.<tenant>.<pipeline>.deliverer
    instance_id: str | None = None  # static group membership (e.g. the pod name): fast takeover
    max_inflight: int = 20_000  # alerts read and not terminal before the consumer pauses
    claim_ttl: float = 5.0  # a lease, extended while a send waits (claims.py)
    commit_interval: float = 0.2
    breaker_threshold: int = 5
    breaker_cooldown: float = 5.0
    shutdown_grace: float = 10.0
    batch_size: int = 500
    local_attempts: int = 3  # failed attempts in a row kept in memory before a delivery is parked
    local_max_delay: float = 1.0  # a longer backoff (or Retry-After) parks the delivery instead
    # parked deliveries read back and not yet due before the retry topic pauses
    max_retry_waiting: int = 20_000
    http_client: str = "lean"  # plain-http webhooks: "lean" (http1.py) or "aiohttp"
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
