"""The generator's rule whose groups span devices: ``gen-site-down`` (``by: [site]``).

Devices belong to ``site-00`` … (device i to site i mod sites, a ``site`` field in every event).
Every ``site_episode_every_s`` of *event time* each site (its own phase) has an outage of
``site_episode_len_s``: every one of its devices reports a value below ``site_low`` while its event
time is inside it, whatever its clock skew. ``gen-site-down`` (``value < site_low``, by site) then
sees, in the (event time, deviceId, seq) order stage 2 evaluates a group in, one run per outage: it
fires at the outage's first accepted event and resolves at the first accepted event after it.

The ledger computes those runs over the events the pipeline must accept, as they are planned: a
per-site heap releases events once the planned event time is ``lateness`` past them (accepted
events are never further out of order than the clock-skew spread, which the plan keeps below it),
so memory stays bounded by the lateness, not the stream. The alerts are due once every partition's
watermark has passed the trigger (stage 2 waits for the slowest), so they are never ``exact``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SITE_RULE", "SiteModel"]

SITE_RULE = "gen-site-down"
WATERMARK_RECORD_S = 1.0  # stage 1 forwards its watermark once a second

Expect = Callable[[str, str, str, int, int, "float | None", bool, str, "int | None", "float | None"], None]
"""(rule, group, status, at_ms, starts_at_ms, due_s, exact, device, seq, trigger_s) -> None."""


@dataclass(slots=True)
class _Site:
    name: str
    phase_ms: int
    pending: list[tuple[int, str, int, float]] = field(default_factory=list)  # (ts, device, seq, at)
    fired: int | None = None  # starts_at of the run in progress


class SiteModel:
    """Which site a device is in, when a site's readings drop, and the alerts that follow."""

    def __init__(self, *, sites: int, every_s: float, len_s: float, low: float, warmup_s: float,
                 start_ms: int, lateness_ms: int, skew_ms: int, seed: int, expect: Expect) -> None:
        rng = random.Random(seed * 7919 + 1)  # its own stream: the devices' values stay as without sites
        self.period_ms, self.len_ms = round(every_s * 1000), round(len_s * 1000)
        self.sites = [_Site(f"site-{i:02d}", rng.randrange(self.period_ms)) for i in range(sites)]
        self.low = low
        self.warmup_until = start_ms + round(warmup_s * 1000)
        self.start_ms, self.lateness_ms, self.skew_ms = start_ms, lateness_ms, skew_ms
        self._expect = expect
        self._max_ts = 0

    def rule(self, channels: list[str]) -> dict[str, Any]:
        return {"name": SITE_RULE, "spec": {
            "select": {"types": ["metric"]}, "by": ["site"],
            "threshold": {"condition": f"value < {self.low:g}"}, "severity": "critical",
            "channels": channels, "annotations": {"summary": "readings dropped at {{ site }}"}}}

    def site_of(self, device_index: int) -> str:
        return self.sites[device_index % len(self.sites)].name

    def down(self, device_index: int, ts: int) -> bool:
        """Whether the device's site is in an outage at event time ``ts``."""
        site = self.sites[device_index % len(self.sites)]
        return ts >= self.warmup_until and (ts - self.start_ms + site.phase_ms) % self.period_ms < self.len_ms

    def value(self, rng: random.Random) -> float:
        return round(rng.uniform(0.0, 0.9) * self.low, 2)

    # --- the ledger -----------------------------------------------------------------------------

    def accept(self, device_index: int, device: str, seq: int, ts: int, at: float) -> None:
        """An event of a metric device the pipeline must evaluate (in the order the plan makes them)."""
        site = self.sites[device_index % len(self.sites)]
        heapq.heappush(site.pending, (ts, device, seq, at))
        if ts > self._max_ts:
            self._max_ts = ts
            self._release(self._max_ts - self.lateness_ms)

    def end(self) -> None:
        self._release(None)

    def _release(self, before: int | None) -> None:
        for site in self.sites:
            while site.pending and (before is None or site.pending[0][0] < before):
                self._apply(site, *heapq.heappop(site.pending))

    def _apply(self, site: _Site, ts: int, device: str, seq: int, at: float) -> None:
        index = int(device.rsplit("-", 1)[1])
        holds = self.down(index, ts)
        group = f"site={site.name}"
        # stage 2 takes it once the slowest partition's watermark passes it
        due = (ts - self.start_ms + self.lateness_ms + 2 * self.skew_ms) / 1000 + WATERMARK_RECORD_S
        if holds and site.fired is None:
            site.fired = ts
            self._expect(SITE_RULE, group, "firing", ts, ts, max(due, at), False, device, seq, at)
        elif not holds and site.fired is not None:
            self._expect(SITE_RULE, group, "resolved", ts, site.fired, max(due, at), False, device, seq, at)
            site.fired = None
