"""What the shared infrastructure did during a benchmark step: Redis's AOF rewrites (a fork, then a
child writing the whole dataset on a core the pipeline shares) from the Redis log, and the Kafka
broker's stop-the-world GC pauses from the JVM's gc.log (devstack/kafka.py writes it). A step's
tail that lines up with one of these is the machine's, not the pipeline's; bench_e2e records them
beside each step's percentiles.

Plain text parsing of two fixed log formats: no library reads either.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["gc_pauses", "redis_rewrites", "stalls"]

# 2294:M 06 Dec 2026 22:06:00.748 * Background append only file rewriting started by pid 2535
_REDIS = re.compile(r"^\d+:[A-Z] (\d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}) [*#.-] (.*)$")
# [2026-12-06T22:06:18.522+0000][93.754s] GC(47) Pause Remark 180M->180M(305M) 6.648ms
_GC = re.compile(
    r"^\[(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{4})\]\[[^]]*\] GC\(\d+\) (Pause .*?) ([\d.]+)ms$")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def redis_rewrites(log: Path, since: float, until: float) -> list[dict[str, Any]]:
    """AOF rewrites that ran (started or ended) in [since, until] (epoch seconds; the log is UTC)."""
    out: list[dict[str, Any]] = []
    started: float | None = None
    for line in _lines(log):
        m = _REDIS.match(line)
        if m is None:
            continue
        at = datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        text = m.group(2)
        if text.startswith("Background append only file rewriting started"):
            started = at
        elif text.startswith("Background AOF rewrite finished") and started is not None:
            if started <= until and at >= since:
                out.append({"at_s": round(started - since, 2), "seconds": round(at - started, 2)})
            started = None
    if started is not None and started <= until:
        out.append({"at_s": round(started - since, 2), "seconds": None})  # still running
    return out


def gc_pauses(log: Path, since: float, until: float) -> list[dict[str, Any]]:
    """The broker's GC pauses that ended in [since, until]."""
    out: list[dict[str, Any]] = []
    for name in (log.name + ".0", log.name):  # the rotated file first: older
        for line in _lines(log.with_name(name)):
            m = _GC.match(line)
            if m is None:
                continue
            at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            if since <= at <= until:
                out.append({"at_s": round(at - since, 2), "kind": m.group(2).split(" ")[1],
                            "ms": float(m.group(3))})
    return out


def stalls(redis_log: Path | None, kafka_gc_log: Path | None, since: float, until: float) -> dict[str, Any]:
    """The step's summary: Redis rewrites, and the broker's pause count, total and longest."""
    pauses = gc_pauses(kafka_gc_log, since, until) if kafka_gc_log else []
    return {
        "redis_aof_rewrites": redis_rewrites(redis_log, since, until) if redis_log else [],
        "kafka_gc_pauses": len(pauses),
        "kafka_gc_ms_total": round(sum(p["ms"] for p in pauses), 1),
        "kafka_gc_longest": max(pauses, key=lambda p: p["ms"], default=None),
    }
