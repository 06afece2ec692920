"""The operator's retry delay after a failure: capped exponential backoff with full jitter."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (0-based): 0.25-0.5 s up to 30-60 s."""
    return float(random.uniform(0.5, 1.0) * min(60.0, 0.5 * 2.0 ** min(attempt, 10)))  # noqa: S311 - jitter only
