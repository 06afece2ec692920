"""What the traffic generator sends, and which alerts a correct pipeline must raise from it.

A ``Scenario`` (devices, a rate schedule, a value model, edge-case ``Knobs``) unrolls into planned
sends in send-time order (``Plan.sends``), deterministically from its seed. The value model makes
the scenario's own rules (``Plan.rules``) fire at times it knows: *flapper* devices go above the
threshold of ``gen-hot`` for a few seconds every so often; *silent* devices stop their heartbeat
once for longer than ``gen-silent``'s absence; with ``sites``, every device of a site reads low
during the site's outages and ``gen-site-down`` (by site, across devices: sites.py) fires. As
each device's events are generated (in seq order, the order the engine evaluates them) the plan
computes the transitions the semantics of docs/rules.md give over the events that must be
accepted: truly late ones are excluded,
duplicates, reordering within the lateness bound, gaps, clock skew, oversized and malformed
events change nothing. A unit test holds these against tests/reference/evaluator.py.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from alertpipe.generate.schedules import Schedule, due_times
from alertpipe.generate.sites import SITE_RULE, SiteModel
from alertpipe.workers.alerts import alert_id

__all__ = [
    "HOT_RULE", "SILENT_RULE", "SITE_RULE", "Expected", "Knobs", "Plan", "PlanError", "Scenario", "Send",
]

HOT_RULE = "gen-hot"
SILENT_RULE = "gen-silent"
MARGIN_MS = 1500  # network and batching jitter the ledger allows for inside the lateness bound


class PlanError(ValueError):
    """A scenario whose ledger could not be trusted (e.g. skew beyond the lateness bound)."""


@dataclass(frozen=True, slots=True)
class Knobs:
    """Edge cases, each a fraction of the due events (0 = off) or a bound in milliseconds."""

    duplicates: float = 0.0  # sent again, up to dup_delay_ms later
    dup_delay_ms: int = 1000
    reorder: float = 0.0  # held back by up to reorder_ms: arrives after later seqs of its device
    reorder_ms: int = 0
    late: float = 0.0  # held back beyond the lateness bound: must go to the late topic
    late_delay_ms: int = 0  # 0: lateness + skew spread + 3 s
    gaps: float = 0.0  # a seq skipped, never sent
    skew_ms: int = 0  # each device's clock is off by a fixed amount in [-skew_ms, +skew_ms]
    hot_devices: int = 0  # this many devices take hot_share of all events (hot keys)
    hot_share: float = 0.0
    oversized: float = 0.0  # an extra event of oversized_bytes, in a request of its own
    oversized_bytes: int = 2_000_000
    malformed: float = 0.0  # an extra event the ingestor must reject (JSON, not a valid event)


@dataclass(frozen=True, slots=True)
class Scenario:
    tenant: str
    pipeline: str
    schedule: Schedule
    duration: float  # seconds
    devices: int = 100
    seed: int = 1
    lateness_ms: int = 5000  # the pipeline's allowedLateness
    warmup_s: float = 0.0  # no episode before this (0: lateness + 2 s: first events are held)
    flappers: float = 0.1  # fraction of devices with episodes above the threshold
    episode_every_s: float = 15.0
    episode_len_s: float = 3.0
    threshold: float = 80.0
    for_ms: int = 0  # gen-hot's ``for``
    silent_devices: int = 0  # devices sending heartbeats that fall silent once
    absence_ms: int = 5000  # gen-silent's ``for``
    sites: int = 0  # devices in this many sites (a ``site`` field), each with outages (0: none)
    site_episode_every_s: float = 20.0  # event time between a site's outages
    site_episode_len_s: float = 4.0
    channels: tuple[str, ...] = ("ops",)
    knobs: Knobs = field(default_factory=Knobs)

    @property
    def site_low(self) -> float:
        """``gen-site-down`` fires below this: under every normal reading (0.25 x threshold and up)."""
        return self.threshold / 10

    @property
    def warmup(self) -> float:
        return self.warmup_s or (self.lateness_ms + 2000) / 1000


@dataclass(frozen=True, slots=True)
class Send:
    """One planned send: ``at`` seconds after the start; ``body`` the JSON object; ``kind`` one of
    event, duplicate, reordered, late, malformed, oversized."""

    at: float
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Expected:
    """One alert transition a correct pipeline raises, once."""

    id: str
    rule: str
    group_key: str
    status: str
    at_ms: int  # event time of the transition (eventTimeMs)
    starts_at_ms: int
    due_s: float | None  # when a correct system has all it needs (s after start); None: after the end
    exact: bool  # due_s is the trigger's send time (nothing held it back in the engine)
    device: str
    seq: int | None  # the triggering event (None: a watermark timer)
    trigger_s: float | None = None  # the planned send time of the triggering event

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "rule": self.rule, "groupKey": self.group_key, "status": self.status,
                "atMs": self.at_ms, "startsAtMs": self.starts_at_ms, "dueS": self.due_s,
                "exact": self.exact, "deviceId": self.device, "seq": self.seq, "triggerS": self.trigger_s}


@dataclass(slots=True)
class _Device:
    name: str
    skew: int
    kind: str  # normal, flapper, silent
    phase: float = 0.0
    silence: tuple[float, float] = (0.0, 0.0)
    next_seq: int = 0
    latest_send: float = 0.0  # the latest send time of an accepted event so far (seq order)
    held_until_ms: int = 0  # event time up to which the engine holds this device's events
    run_start: int | None = None  # gen-hot: event time the current run began
    run_fired: int | None = None
    last_seen: int | None = None  # gen-silent


class Plan:
    """A scenario unrolled: ``sends()`` yields in send order; ``expected`` fills as it goes."""

    def __init__(self, scenario: Scenario, start_ms: int) -> None:
        s = scenario
        k = s.knobs
        late_delay = k.late_delay_ms or s.lateness_ms + 2 * k.skew_ms + 3000
        spread = 2 * k.skew_ms + k.reorder_ms + MARGIN_MS
        if (k.reorder and spread >= s.lateness_ms) or 2 * k.skew_ms + MARGIN_MS >= s.lateness_ms:
            raise PlanError(
                f"clock skew spread (2 x {k.skew_ms} ms) + reorder bound ({k.reorder_ms} ms) + {MARGIN_MS} ms"
                f" must stay under the allowed lateness ({s.lateness_ms} ms) for the ledger to hold")
        if k.late and late_delay < s.lateness_ms + 2 * k.skew_ms + MARGIN_MS:
            raise PlanError(f"late_delay_ms {late_delay} must exceed lateness + skew spread + {MARGIN_MS} ms")
        if s.devices < 1 or s.silent_devices >= s.devices:
            raise PlanError("devices must be >= 1 and more than silent_devices")
        if s.sites and not 0 < s.site_episode_len_s < s.site_episode_every_s:
            raise PlanError("site outages need 0 < site_episode_len_s < site_episode_every_s")
        if s.sites < 0 or s.sites > s.devices - s.silent_devices:
            raise PlanError("sites must be between 0 and the number of devices that are not silent")
        self.scenario = s
        self.start_ms = start_ms
        self.late_delay = late_delay / 1000
        self.rng = random.Random(s.seed)
        self.expected: list[Expected] = []
        self.counts: dict[str, int] = dict.fromkeys(
            ("event", "duplicate", "reordered", "late", "gap", "malformed", "oversized"), 0)
        self.devices = self._devices()
        self.sites = None if not s.sites else SiteModel(
            sites=s.sites, every_s=s.site_episode_every_s, len_s=s.site_episode_len_s, low=s.site_low,
            warmup_s=s.warmup, start_ms=start_ms, lateness_ms=s.lateness_ms, skew_ms=k.skew_ms, seed=s.seed,
            expect=self._expect_group)
        self._ended = False

    # --- the rules the value model is written for -----------------------------------------------

    def rules(self) -> list[dict[str, Any]]:
        """AlertRule specs (metadata name, spec) whose alerts ``expected`` predicts."""
        s = self.scenario
        hot: dict[str, Any] = {
            "select": {"types": ["metric"]},
            "threshold": {"condition": f"value > {s.threshold:g}"},
            "severity": "warning",
            "channels": list(s.channels),
            "annotations": {"summary": "value {{ value }} on {{ deviceId }}"},
        }
        if s.for_ms:
            hot["for"] = f"{s.for_ms}ms"
        out = [{"name": HOT_RULE, "spec": hot}]
        if s.silent_devices:
            out.append({"name": SILENT_RULE, "spec": {
                "select": {"types": ["hb"]}, "absence": {"for": f"{s.absence_ms}ms"},
                "severity": "info", "channels": list(s.channels)}})
        if self.sites is not None:
            out.append(self.sites.rule(list(s.channels)))
        return out

    # --- devices --------------------------------------------------------------------------------

    def _devices(self) -> list[_Device]:
        s, rng = self.scenario, self.rng
        n_flap = round(s.flappers * (s.devices - s.silent_devices))
        out = []
        for i in range(s.devices):
            skew = rng.randint(-s.knobs.skew_ms, s.knobs.skew_ms) if s.knobs.skew_ms else 0
            kind = ("silent" if i < s.silent_devices
                    else "flapper" if i < s.silent_devices + n_flap else "normal")
            d = _Device(f"dev-{i:05d}", skew, kind, phase=rng.uniform(0, s.episode_every_s))
            if kind == "silent":
                quiet = (s.absence_ms + 3000) / 1000
                begin = rng.uniform(s.warmup, max(s.warmup, s.duration - quiet - 1))
                d.silence = (begin, begin + quiet)
            out.append(d)
        return out

    def _pick(self, t: float) -> _Device:
        s, k, rng = self.scenario, self.scenario.knobs, self.rng
        if k.hot_devices and rng.random() < k.hot_share:
            hot = min(k.hot_devices, s.devices - s.silent_devices)
            d = self.devices[s.silent_devices + rng.randrange(hot)]
        else:
            d = self.devices[rng.randrange(s.devices)]
        if d.kind == "silent" and d.silence[0] <= t < d.silence[1]:
            d = self.devices[s.silent_devices + rng.randrange(s.devices - s.silent_devices)]
        return d

    def _value(self, d: _Device, t: float, ts: int) -> float:
        s = self.scenario
        if self.sites is not None and d.kind != "silent" and self.sites.down(self._index(d), ts):
            return self.sites.value(self.rng)
        if d.kind == "flapper" and t >= s.warmup and (t + d.phase) % s.episode_every_s < s.episode_len_s:
            return round(s.threshold + 5 + self.rng.uniform(0, 14), 2)
        return round(self.rng.uniform(0.25, 0.75) * s.threshold, 2)

    # --- the stream -----------------------------------------------------------------------------

    def sends(self) -> Iterator[Send]:
        """Every planned send in send-time order (held-back copies merged in by a heap)."""
        s, k, rng = self.scenario, self.scenario.knobs, self.rng
        delayed: list[tuple[float, int, Send]] = []
        n = 0
        for t in due_times(s.schedule, s.duration):
            while delayed and delayed[0][0] <= t:
                yield heapq.heappop(delayed)[2]
            d = self._pick(t)
            if k.gaps and d.next_seq > 0 and t >= s.warmup and rng.random() < k.gaps:
                self._missing(d, d.next_seq, t)
                d.next_seq += 1
                self.counts["gap"] += 1
            seq = d.next_seq
            d.next_seq += 1
            ts = self.start_ms + int(t * 1000) + d.skew
            typ = "hb" if d.kind == "silent" else "metric"
            body = {"tenant": s.tenant, "deviceId": d.name, "seq": seq, "ts": ts, "type": typ,
                    "value": self._value(d, t, ts)}
            if self.sites is not None:
                body["site"] = self.sites.site_of(self._index(d))
            kind, at = "event", t
            # late only while the stream goes on: the watermark must have passed it when it comes
            if seq > 0 and s.warmup <= t <= s.duration - self.late_delay and k.late and rng.random() < k.late:
                kind, at = "late", t + self.late_delay
                self._missing(d, seq, t)
            elif seq > 0 and k.reorder and rng.random() < k.reorder:
                kind, at = "reordered", t + rng.uniform(0, k.reorder_ms / 1000)
            if kind != "late":
                self._accept(d, seq, ts, at, body)
            self.counts[kind] += 1
            if kind == "event":
                yield Send(at, kind, body)
            else:
                n += 1
                heapq.heappush(delayed, (at, n, Send(at, kind, body)))
            if k.duplicates and kind != "late" and rng.random() < k.duplicates:
                n += 1
                dup_at = at + rng.uniform(0, k.dup_delay_ms / 1000)
                heapq.heappush(delayed, (dup_at, n, Send(dup_at, "duplicate", dict(body))))
                self.counts["duplicate"] += 1
            if k.malformed and rng.random() < k.malformed:
                self.counts["malformed"] += 1
                yield Send(t, "malformed", self._malformed(d, t))
            if k.oversized and rng.random() < k.oversized:
                self.counts["oversized"] += 1
                yield Send(t, "oversized", {"tenant": s.tenant, "deviceId": f"blob-{d.name}", "seq": seq,
                                            "ts": ts, "type": "blob", "pad": "x" * k.oversized_bytes})
        while delayed:
            yield heapq.heappop(delayed)[2]
        self._end()

    @staticmethod
    def _index(d: _Device) -> int:
        return int(d.name[4:])

    def _malformed(self, d: _Device, t: float) -> dict[str, Any]:
        s = self.scenario
        broken: list[dict[str, Any]] = [
            {"tenant": s.tenant, "deviceId": d.name, "ts": self.start_ms, "type": "metric"},  # no seq
            {"tenant": s.tenant, "deviceId": d.name, "seq": -1, "ts": self.start_ms, "type": "metric"},
            {"tenant": s.tenant, "deviceId": d.name, "seq": 1, "ts": True, "type": "metric"},
            {"tenant": s.tenant, "deviceId": "", "seq": 1, "ts": self.start_ms, "type": "metric"},
            {"deviceId": d.name, "seq": 1, "ts": self.start_ms, "type": "metric"},  # no tenant
        ]
        return broken[self.rng.randrange(len(broken))]

    # --- what a correct system raises -----------------------------------------------------------

    def _missing(self, d: _Device, seq: int, t: float) -> None:
        """``seq`` will not be evaluated (a gap or a late event): the next events wait for the
        watermark to pass them, up to the lateness bound after the missing one."""
        d.held_until_ms = max(d.held_until_ms, self.start_ms + int(t * 1000) + d.skew
                              + self.scenario.lateness_ms + MARGIN_MS)

    def _accept(self, d: _Device, seq: int, ts: int, at: float, body: dict[str, Any]) -> None:
        """An event the pipeline must evaluate, in its device's seq order."""
        s = self.scenario
        if seq == 0:  # a device's first events wait out the lateness bound
            d.held_until_ms = ts + s.lateness_ms + MARGIN_MS
        d.latest_send = max(d.latest_send, at)
        if self.sites is not None and d.kind != "silent":
            self.sites.accept(self._index(d), d.name, seq, ts, at)
        exact = ts > d.held_until_ms
        due = d.latest_send if exact else (ts - d.skew - self.start_ms + s.lateness_ms) / 1000
        if d.kind == "silent":
            if d.last_seen is not None and ts - d.last_seen >= s.absence_ms:
                fire = d.last_seen + s.absence_ms
                wm_due = (fire - d.skew - self.start_ms + s.lateness_ms) / 1000
                self._expect(SILENT_RULE, d, "firing", fire, fire, min(wm_due, due), False, None)
                self._expect(SILENT_RULE, d, "resolved", ts, fire, due, exact, seq, at)
            if d.last_seen is None or ts > d.last_seen:
                d.last_seen = ts
            return
        if body["value"] > s.threshold:
            if d.run_start is None:
                d.run_start = ts
                if s.for_ms == 0:
                    d.run_fired = ts
                    self._expect(HOT_RULE, d, "firing", ts, ts, due, exact, seq, at)
            elif d.run_fired is None and ts >= d.run_start + s.for_ms:
                self._fire_pending(d, due)
        elif d.run_start is not None:
            if d.run_fired is None and ts >= d.run_start + s.for_ms:
                self._fire_pending(d, due)
            if d.run_fired is not None:
                self._expect(HOT_RULE, d, "resolved", ts, d.run_fired, due, exact, seq, at)
            d.run_start = d.run_fired = None

    def _fire_pending(self, d: _Device, due: float) -> None:
        assert d.run_start is not None  # noqa: S101 - called with a run
        at = d.run_start + self.scenario.for_ms
        wm_due = (at - d.skew - self.start_ms + self.scenario.lateness_ms) / 1000
        d.run_fired = at
        self._expect(HOT_RULE, d, "firing", at, at, min(due, wm_due), False, None)

    def _expect(self, rule: str, d: _Device, status: str, at: int, start: int, due: float | None,
                exact: bool, seq: int | None, trigger: float | None = None) -> None:
        self._expect_group(rule, f"deviceId={d.name}", status, at, start, due, exact, d.name, seq, trigger)

    def _expect_group(self, rule: str, group: str, status: str, at: int, start: int, due: float | None,
                      exact: bool, device: str, seq: int | None, trigger: float | None) -> None:
        s = self.scenario
        self.expected.append(Expected(alert_id(s.tenant, s.pipeline, rule, group, start), rule, group,
                                      status, at, start, due, exact, device, seq, trigger))

    def _end(self) -> None:
        """Timers the watermark fires once the stream has ended (the evaluator's idle rule)."""
        if self._ended:
            return
        self._ended = True
        s = self.scenario
        if self.sites is not None:
            self.sites.end()
        for d in self.devices:
            if d.kind == "silent" and d.last_seen is not None:
                fire = d.last_seen + s.absence_ms
                self._expect(SILENT_RULE, d, "firing", fire, fire, None, False, None)
            elif d.run_start is not None and d.run_fired is None:
                at = d.run_start + s.for_ms
                d.run_fired = at
                self._expect(HOT_RULE, d, "firing", at, at, None, False, None)
