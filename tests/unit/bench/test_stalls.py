# ruff: noqa: E501
"""bench/e2e/stalls.py reads the two log formats the devstack's Redis and broker write (the lines
below are copied from a real run's logs)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.e2e.stalls import gc_pauses, redis_rewrites, stalls

pytestmark = pytest.mark.unit

REDIS_LOG = """\
2294:M 06 Dec 2026 22:04:45.101 * Ready to accept connections tcp
2294:M 06 Dec 2026 22:06:00.732 * Starting automatic rewriting of AOF on 100% growth
2294:M 06 Dec 2026 22:06:00.748 * Background append only file rewriting started by pid 2535
2535:C 06 Dec 2026 22:06:02.947 * Fork CoW for AOF rewrite: current 41 MB, peak 41 MB, average 29 MB
2294:M 06 Dec 2026 22:06:03.012 * Background AOF rewrite finished successfully
2294:M 06 Dec 2026 22:07:30.000 * Background append only file rewriting started by pid 2600
"""

GC_LOG = """\
[2026-12-06T22:05:50.964+0000][66.196s] GC(40) Pause Young (Concurrent Start) (G1 Evacuation Pause) 150M->120M(300M) 33.707ms
[2026-12-06T22:05:51.010+0000][66.250s] GC(40) Concurrent Mark Cycle 53.457ms
[2026-12-06T22:06:18.522+0000][93.754s] GC(47) Pause Remark 180M->180M(305M) 6.648ms
"""


def ts(hms: str) -> float:
    return datetime.strptime(f"2026-12-06 {hms}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def test_a_rewrite_inside_the_step_is_found_with_its_length(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text(REDIS_LOG)
    assert redis_rewrites(log, ts("22:05:55"), ts("22:06:20")) == [{"at_s": 5.75, "seconds": 2.26}]
    assert redis_rewrites(log, ts("22:06:10"), ts("22:06:20")) == []  # ended before the step
    # one still running at the end of the log
    assert redis_rewrites(log, ts("22:07:00"), ts("22:08:00")) == [{"at_s": 30.0, "seconds": None}]


def test_broker_pauses_in_the_window_not_concurrent_phases(tmp_path: Path) -> None:
    log = tmp_path / "gc.log"
    (tmp_path / "gc.log.0").write_text(GC_LOG.splitlines(keepends=True)[0])  # rotated: older lines
    log.write_text("".join(GC_LOG.splitlines(keepends=True)[1:]))
    got = gc_pauses(log, ts("22:05:50"), ts("22:06:20"))
    assert [(p["kind"], p["ms"]) for p in got] == [("Young", 33.707), ("Remark", 6.648)]
    summary = stalls(None, log, ts("22:05:50"), ts("22:06:20"))
    assert summary["kafka_gc_pauses"] == 2
    assert summary["kafka_gc_ms_total"] == 40.4
    assert summary["kafka_gc_longest"]["ms"] == 33.707
    assert summary["redis_aof_rewrites"] == []


def test_missing_logs_give_an_empty_summary(tmp_path: Path) -> None:
    assert stalls(tmp_path / "none.log", tmp_path / "gc.log", 0, 1) == {
        "redis_aof_rewrites": [], "kafka_gc_pauses": 0, "kafka_gc_ms_total": 0, "kafka_gc_longest": None}
