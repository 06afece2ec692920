"""librdkafka's log lines in the operator's own logging, rate-limited.

An admin client whose brokers are down logs a "Connect ... failed: Connection refused" on every
reconnect (about 20 a second); left to librdkafka they went to stderr unformatted, ~1,000 lines in
90 s. Here they go to the logger ``alertpipe.operator.librdkafka`` and a filter lets one line per
kind (facility and broker) through per window, counting what it held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimitFilter", "librdkafka_logger"]

_KIND = re.compile(r"^(\S+)\s+\[[^\]]*\]\s+(\[thrd:[^\]]*\])?")


class RateLimitFilter(logging.Filter):
    """Lets the first record of a kind through, then at most one per ``window`` seconds; a record let
    through after others were held back says how many."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[int, str], float] = {}
        self._held: dict[tuple[int, str], int] = {}

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple[int, str]:
        m = _KIND.match(record.getMessage())
        return record.levelno, (m.group(1) + (m.group(2) or "")) if m else record.getMessage()[:80]

    def filter(self, record: logging.LogRecord) -> bool:
        key = self.kind(record)
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
            if len(self._last) > 1000:  # bounded: brokers and facilities are few, but never trust that
                self._last = {key: now}
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last {self.window:.0f} s)"
            record.args = ()
        return True


_LOGGER_NAME = "alertpipe.operator.librdkafka"


def librdkafka_logger() -> logging.Logger:
    """The logger every operator Kafka client passes as ``logger`` (with the rate limit, once)."""
    log = logging.getLogger(_LOGGER_NAME)
    if not any(isinstance(f, RateLimitFilter) for f in log.filters):
        log.addFilter(RateLimitFilter())
    return log
