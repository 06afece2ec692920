"""What the receivers saw: every request or message, and counts by Idempotency-Key."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int  # what the receiver answered
    at: float
    signature_ok: bool | None = None  # None: no secret configured for this path

    @property
    def key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@dataclass
class Recorder:
    items: list[Received] = field(default_factory=list)
    attempts_by_key: Counter[str] = field(default_factory=Counter)
    accepted_by_key: Counter[str] = field(default_factory=Counter)

    def add(self, item: Received) -> None:
        self.items.append(item)
        if item.key is not None:
            self.attempts_by_key[item.key] += 1
            if 200 <= item.status < 300:
                self.accepted_by_key[item.key] += 1

    def accepted(self, prefix: str = "") -> list[Received]:
        return [r for r in self.items if r.path.startswith(prefix) and 200 <= r.status < 300]

    def on(self, prefix: str) -> list[Received]:
        return [r for r in self.items if r.path.startswith(prefix)]

    def duplicates(self) -> int:
        """Successful deliveries beyond the first, summed over keys."""
        return sum(n - 1 for n in self.accepted_by_key.values() if n > 1)

    def clear(self) -> None:
        self.items.clear()
        self.attempts_by_key.clear()
        self.accepted_by_key.clear()


async def wait_until(
    cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
