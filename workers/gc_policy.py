"""The workers' garbage-collector policy, and the pauses it causes as a metric.

CPython frees almost everything by reference counting; its cyclic collector exists for the rest
and runs after every 700 allocations of container objects (the default), walking the young
objects and, every hundred or so of those runs, every live object of the process. A worker's hot
path allocates a few container objects per event (decoded events, tuples, pane and group records)
and, measured, makes **no cyclic garbage in steady state** (`gc.collect()` after 30k events of
either evaluator benchmark stream finds 0 unreachable objects). So on the default thresholds the
collector is pure overhead there, and a large one: on bench/evaluator's streams it took 45 % of
the evaluator's CPU with 20 sliding aggregates (24 → 12.4 µs per event without it) and 10–25 %
with 20 threshold rules, and a full collection of a 400k-object heap paused the loop 200–970 ms.

The policy (``apply``):

* ``gc.freeze()`` once the worker has started: the ~60k objects of the imported modules, classes
  and config are moved to the permanent generation, which no collection walks.
* The young generation's threshold raised from 700 to ``young`` (50,000 by default) and the middle
  one from 10 to 20: the collector runs ~70 times less often, and each run walks what survived
  since the last, so the CPU it takes drops with the count (measured: 0.76 s → 0 s of collection
  per 150k threshold-rule events, 4.8 s → 0.16 s per 150k aggregate events). The oldest threshold
  and CPython's rule that a full collection waits until the long-lived objects grew by a quarter
  are kept: cycles that do form (an exception kept with its traceback, a dropped partition's
  engine state) are still collected, only later; a young generation of 50k objects is a few MB.

The evaluator and the ingestor apply it with the defaults (the ingestor, measured: 243–255k events
per CPU-second against 202–230k, request p99 26–27 ms against 40–48 ms; bench/ingestor/results-gc.json).
The deliverer (thousands of short-lived asyncio tasks per second) uses its own measured thresholds
(20,000 / 50 / 100: ~10 % less CPU per webhook). ``--gc-young 0`` keeps the
interpreter's defaults (no freeze either). ``GcPauses`` exports every
collection as ``alertpipe_gc_pause_seconds{worker, generation}`` (a histogram), so a latency tail a
collection causes is seen on the dashboard, not guessed at.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["DEFAULT_YOUNG", "GcPauses", "add_gc_argument", "apply"]

DEFAULT_YOUNG = 50_000
MIDDLE = 20

_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def add_gc_argument(parser: argparse.ArgumentParser, default: int = DEFAULT_YOUNG) -> None:
    parser.add_argument(
        "--gc-young", type=int, default=default, metavar="N",
        help=f"allocations between two young garbage collections (default {default:,}; the"
             " start-up objects are frozen out of every collection); 0 keeps Python's defaults")


def apply(young: int = DEFAULT_YOUNG, middle: int = MIDDLE, old: int | None = None) -> bool:
    """Freeze what exists now and raise the young thresholds; False (nothing changed) for 0.
    ``old`` None keeps the interpreter's oldest threshold."""
    if young <= 0:
        return False
    gc.collect()  # what start-up left unreachable goes first: frozen objects are never collected
    gc.freeze()
    gc.set_threshold(young, middle, gc.get_threshold()[2] if old is None else old)
    return True


class GcPauses:
    """``alertpipe_gc_pause_seconds{worker, generation}``: the wall time of every collection."""

    def __init__(self, registry: CollectorRegistry, worker: str) -> None:
        self.histogram = Histogram("alertpipe_gc_pause_seconds",
                                   "Wall time of each garbage collection (the process is paused).",
                                   ("worker", "generation"), buckets=_PAUSE_BUCKETS, registry=registry)
        self._by_gen = [self.histogram.labels(worker, str(g)) for g in range(3)]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._by_gen[min(int(info.get("generation", 2)), 2)].observe(time.perf_counter() - self._started)
            self._started = 0.0

    def install(self) -> GcPauses:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
