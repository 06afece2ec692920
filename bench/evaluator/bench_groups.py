"""What the repartition stage costs in CPU, without Kafka: `avg by deviceId` and `avg by site` in
stage 1 alone (the latter per partition: the old, wrong result) versus `avg by site` through stage 1
→ record encode → decode → stage 2 (6 events partitions, 6 repartition partitions, watermark
records after every batch of 500). Kafka's produce and consume of the extra records come on top.

    PYTHONSAFEPATH=1 .venv/bin/python -m bench.evaluator.bench_groups [--events 300000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
import zlib
from typing import Any

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.evaluator.repartition import (
    ForwardedEvent,
    Router,
    decode_record,
    encode_event,
    encode_watermark,
)
from alertpipe.workers.rules import compile_rule
from alertpipe.workers.rules.engine import Engine, EngineSettings
from alertpipe.workers.rules.groups import GroupStage

T0 = 1_767_225_600_000
PARTS = 6


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def events(n: int, devices: int = 10_000, sites: int = 50) -> list[dict[str, Any]]:
    rnd = random.Random(1)
    seqs = [0] * devices
    out = []
    for i in range(n):
        d = rnd.randrange(devices)
        out.append({"tenant": "acme", "deviceId": f"dev-{d}", "seq": seqs[d], "ts": T0 + i * 2,
                    "type": "cpu", "site": f"site-{d % sites}", "value": rnd.randint(0, 100)})
        seqs[d] += 1
    return out


def rule(by: list[str]) -> Any:
    return compile_rule("avg", RuleSpec.model_validate({
        "select": {"types": ["cpu"]}, "by": by,
        "aggregate": {"fn": "avg", "field": "value", "window": "1m", "every": "10s",
                      "condition": "value > 99.0"},
    }))


def run(evs: list[dict[str, Any]], by: list[str], repart: bool, batch: int = 500) -> dict[str, Any]:
    r = rule(by)
    settings = EngineSettings("acme", "main", 5000, repartition=repart)
    engine = Engine(settings, [r], clock=lambda: 0.0)
    stages = {p: GroupStage(settings, [r], upstreams=PARTS, partition=p, clock=lambda: 0.0)
              for p in range(PARTS)}
    per: dict[int, list[dict[str, Any]]] = {}
    for e in evs:
        per.setdefault(zlib.crc32(e["deviceId"].encode()) % PARTS, []).append(e)
    router = Router(PARTS)
    record_bytes = records = 0
    c0, w0 = cpu(), time.perf_counter()
    # partitions take turns batch by batch, as one evaluator process consuming all six does
    cursors = dict.fromkeys(per, 0)
    while cursors:
        for u in list(cursors):
            part = engine.partition(u)
            i = cursors[u]
            for e in per[u][i:i + batch]:
                part.offer(e, e["deviceId"], e["seq"], e["ts"])
            cursors[u] = i + batch
            if cursors[u] >= len(per[u]):
                del cursors[u]
            part.take_alerts()
            if not repart:
                continue
            out: list[tuple[int, bytes]] = []
            for rr, key, ts, ingest, d in part.take_forwarded():
                p, _k = router(rr, key)
                out.append((p, encode_event(u, rr.name, rr.fingerprint, ts, ingest, d)))
            wm = encode_watermark(u, part.wm)
            out += [(p, wm) for p in range(PARTS)]
            for p, raw in out:  # stage 2 reads them (in one process here)
                record_bytes += len(raw)
                records += 1
                rec = decode_record(raw)
                if isinstance(rec, ForwardedEvent):
                    stages[p].offer(rec.rule, rec.fingerprint, rec.event, rec.ts, rec.ingest)
                else:
                    stages[p].watermark(rec.upstream, rec.wm)
            for s in stages.values():
                s.take_alerts()
    took_cpu, took_wall = cpu() - c0, time.perf_counter() - w0
    return {"by": by, "repartition": repart, "events": len(evs),
            "cpu_us_per_event": round(took_cpu / len(evs) * 1e6, 2),
            "events_per_s_wall": round(len(evs) / took_wall), "repartition_records": records,
            "repartition_bytes_per_event": round(record_bytes / len(evs), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=300_000)
    args = ap.parse_args()
    evs = events(args.events)
    # by site without the repartition stage is the old, per-partition (wrong) evaluation: the
    # difference to the same rule with it is what the stage costs in CPU
    rows = [run(evs, ["deviceId"], False), run(evs, ["site"], False), run(evs, ["site"], True)]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
