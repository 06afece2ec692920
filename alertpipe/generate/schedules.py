"""Rate schedules of the traffic generator: events per second as a function of time since start.

Open loop: the n-th event is due where the integral of the rate reaches n, whatever the system
under test does; the sender only measures how late it was. Four shapes: ``steady``, ``step``
(a new rate from a given second), ``burst`` (a factor for a while) and ``diurnal`` (a sine).
Parsed from one short text (``steady:1000``, ``step:1000,5000@30``, ``burst:1000x10@20+30``,
``diurnal:1000,0.5,60``) so that a command line and a test say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Schedule", "ScheduleError", "due_times", "parse_schedule"]


class ScheduleError(ValueError):
    """A schedule text that cannot be read; the message says which form was expected."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """``kind`` and its numbers; ``rate(t)`` in events per second ``t`` seconds after the start."""

    kind: str
    base: float  # events per second
    other: float = 0.0  # step: the rate after ``at``; burst: the factor; diurnal: the amplitude (0..1)
    at: float = 0.0  # step/burst: when it begins (s); diurnal: the period (s)
    length: float = 0.0  # burst: how long it lasts (s)

    def rate(self, t: float) -> float:
        if self.kind == "step":
            return self.other if t >= self.at else self.base
        if self.kind == "burst":
            return self.base * self.other if self.at <= t < self.at + self.length else self.base
        if self.kind == "diurnal":
            return self.base * (1.0 + self.other * math.sin(2 * math.pi * t / self.at))
        return self.base

    def next_change(self, t: float) -> float:
        """The next time after ``t`` where a piecewise-constant rate changes (inf: none)."""
        if self.kind == "step" and t < self.at:
            return self.at
        if self.kind == "burst":
            for edge in (self.at, self.at + self.length):
                if t < edge:
                    return edge
        return math.inf

    def expected_count(self, duration: float) -> float:
        """The integral of the rate over [0, duration): how many events are due."""
        if self.kind == "step":
            a = min(duration, self.at)
            return self.base * a + self.other * max(0.0, duration - self.at)
        if self.kind == "burst":
            inside = max(0.0, min(duration, self.at + self.length) - min(duration, self.at))
            return self.base * duration + self.base * (self.other - 1.0) * inside
        if self.kind == "diurnal":
            w = 2 * math.pi / self.at
            return self.base * (duration + self.other * (1 - math.cos(w * duration)) / w)
        return self.base * duration

    def text(self) -> str:
        if self.kind == "step":
            return f"step:{self.base:g},{self.other:g}@{self.at:g}"
        if self.kind == "burst":
            return f"burst:{self.base:g}x{self.other:g}@{self.at:g}+{self.length:g}"
        if self.kind == "diurnal":
            return f"diurnal:{self.base:g},{self.other:g},{self.at:g}"
        return f"steady:{self.base:g}"


_FORMS = ("steady:RATE", "step:RATE,RATE2@SECONDS", "burst:RATExFACTOR@SECONDS+SECONDS",
          "diurnal:RATE,AMPLITUDE,PERIOD")


def parse_schedule(text: str) -> Schedule:
    """A Schedule from its text form (see the module docstring); ScheduleError names the forms."""
    kind, _, rest = text.strip().partition(":")
    if not rest and kind.replace(".", "", 1).isdigit():
        kind, rest = "steady", kind  # a bare number is a steady rate
    try:
        if kind == "steady":
            s = Schedule("steady", float(rest))
        elif kind == "step":
            a, b = rest.split(",")
            r2, at = b.split("@")
            s = Schedule("step", float(a), float(r2), float(at))
        elif kind == "burst":
            rate, b = rest.split("x")
            factor, c = b.split("@")
            at, length = c.split("+")
            s = Schedule("burst", float(rate), float(factor), float(at), float(length))
        elif kind == "diurnal":
            rate, amp, period = rest.split(",")
            s = Schedule("diurnal", float(rate), float(amp), float(period))
        else:
            raise ValueError(kind)
    except ValueError:
        raise ScheduleError(f"schedule {text!r}: expected one of {', '.join(_FORMS)}") from None
    if s.base <= 0 or (s.kind == "step" and s.other <= 0) or (s.kind == "burst" and s.other <= 0):
        raise ScheduleError(f"schedule {text!r}: rates and factors must be positive")
    if s.kind == "diurnal" and not (0 <= s.other < 1 and s.at > 0):
        raise ScheduleError(f"schedule {text!r}: amplitude in [0, 1) and a positive period")
    if s.kind == "burst" and (s.at < 0 or s.length <= 0):
        raise ScheduleError(f"schedule {text!r}: a burst starts at >= 0 s and lasts > 0 s")
    return s


def due_times(schedule: Schedule, duration: float) -> Iterator[float]:
    """Seconds after the start at which each event is due, in order, over [0, duration).

    Piecewise-constant rates are computed per segment (start + k / rate: no drift from summing
    intervals), the part of an interval left at an edge carried into the next rate; the diurnal
    sine is stepped at the rate in force, within a fraction of a percent of its integral.
    """
    if schedule.kind == "diurnal":
        t = 0.0
        while t < duration:
            yield t
            t += 1.0 / schedule.rate(t)
        return
    seg = 0.0
    owed = 0.0  # the part of an interval still to wait at the segment's start (in intervals)
    while seg < duration:
        r = schedule.rate(seg)
        edge = min(schedule.next_change(seg), duration)
        k = 0
        last = None
        while (t := seg + (owed + k) / r) < edge:
            yield t
            last = t
            k += 1
        owed = (seg + (owed + k) / r - edge) * r if last is not None else owed - (edge - seg) * r
        seg = edge
