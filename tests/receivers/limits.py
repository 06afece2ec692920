"""A token bucket the API receivers answer 429 with, as the real services rate-limit per account/project."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RateLimit:
    """``per_second`` requests a second with bursts of ``burst``; None: unlimited."""

    per_second: float | None = None
    burst: float = 1.0
    _tokens: float = field(default=0.0, init=False)
    _at: float = field(default=0.0, init=False)
    refused: int = field(default=0, init=False)

    def take(self) -> bool:
        if self.per_second is None:
            return True
        now = time.monotonic()
        if self._at == 0.0:
            self._tokens, self._at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False

    def wait(self) -> float:
        """Seconds until the next token (what a Retry-After would say)."""
        if self.per_second is None:
            return 0.0
        return max(0.0, (1.0 - self._tokens) / self.per_second)
