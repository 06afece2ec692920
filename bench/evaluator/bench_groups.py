"""What the repartition stage costs in CPU, without Kafka: `avg by deviceId` and `avg by site` in
stage 1 alone (the latter per partition: the old, wrong result) versus `avg by site` through stage 1
→ record encode → decode → stage 2 (6 events partitions, 6 repartition partitions, watermark
records after every batch of 500). Kafka's produce and consume of the extra records come on top.

    PYTHONSAFEPATH=1 .venv/bin/python -m bench.evaluator.bench_groups [--events 300000]

``--kafka`` runs the evaluator itself (in this process) over a preloaded 6-partition topic on the
devstack's Kafka + Redis (env ALERTPIPE_DEVSTACK_ENV, else a stack of its own): the same rule by
deviceId, by site without and with the repartition topic; drain rate and CPU µs per event (all threads).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import zlib
from typing import Any

import orjson

from alertpipe.workers.config import RuleSpec
from alertpipe.workers.evaluator.repartition import (
    ForwardedEvent,
    Router,
    decode_record,
    encode_event,
    encode_watermark,
    project,
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
                body = project(router.keep(rr), d)
                out.append((p, encode_event(u, rr.name, rr.fingerprint, ts, ingest, body)))
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


def kafka_run(bootstrap: str, redis_url: str, evs: list[dict[str, Any]], by: list[str],
              repart: bool) -> dict[str, Any]:
    import threading
    import uuid

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from alertpipe.workers.config import PipelineConfig, StaticConfigSource
    from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions

    name = f"bench-groups-{uuid.uuid4().hex[:8]}"
    topics = {"events": f"{name}-events", "alerts": f"{name}-alerts", "late": f"{name}-late",
              "deadLetter": f"{name}-dlq", "audit": f"{name}-audit"}
    if repart:
        topics["repartition"] = f"{name}-repartition"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(t, PARTS if k in ("events", "repartition") else 1, 1) for k, t in topics.items()]
    for f in admin.create_topics(new).values():
        f.result(timeout=30)
    # idempotent: a retried batch must not land after a later one (its events would be late)
    prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                     "queue.buffering.max.messages": 2_000_000, "enable.idempotence": True})
    for e in evs:
        prod.produce(topics["events"], orjson.dumps(e), e["deviceId"].encode(),
                     partition=zlib.crc32(e["deviceId"].encode()) % PARTS)
        prod.poll(0)
    assert prod.flush(120) == 0
    spec = rule(by).spec.model_dump(mode="json", by_alias=True)
    cfg = PipelineConfig.model_validate({
        "tenant": "acme", "pipeline": "bench", "kafka": {"bootstrapServers": bootstrap, "topics": topics},
        "redis": {"url": redis_url, "keyPrefix": name}, "idleTimeout": "1h",
        "rules": [{"name": "avg", "spec": spec}]}).with_revision()
    ev = Evaluator(StaticConfigSource(cfg), options=EvaluatorOptions(checkpoint_interval=2.0, group_id=name))
    reg = ev.metrics.registry
    stop = threading.Event()
    marks: dict[str, float] = {}

    def value(name: str, **labels: str) -> float:
        return reg.get_sample_value(name, {"tenant": "acme", **labels}) or 0.0

    def done() -> bool:
        seen = (value("alertpipe_evaluator_events_evaluated_total")
                + value("alertpipe_evaluator_events_late_total"))
        if seen < len(evs):
            return False
        read = value("alertpipe_evaluator_repartition_events_total", result="accepted")
        return not repart or read >= len(evs)

    def watch() -> None:
        last = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last > 10:
                last = time.monotonic()
                print("progress:", {k: value(k) for k in ("alertpipe_evaluator_events_consumed_total",
                                                           "alertpipe_evaluator_events_evaluated_total",
                                                           "alertpipe_evaluator_events_late_total")},
                      value("alertpipe_evaluator_events_deduped_total", by="redis"),
                      value("alertpipe_evaluator_events_deduped_total", by="engine"),
                      value("alertpipe_evaluator_repartition_events_total", result="accepted"),
                      file=sys.stderr, flush=True)
            if "t0" not in marks and value("alertpipe_evaluator_events_consumed_total") > 0:
                marks.update(t0=time.perf_counter(), c0=time.process_time())
            if "t0" in marks and done():
                marks.update(t1=time.perf_counter(), c1=time.process_time())
                stop.set()
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    ev.run(stop)
    secs, cpu_s = marks["t1"] - marks["t0"], marks["c1"] - marks["c0"]
    return {"by": by, "repartition": repart, "events": len(evs), "seconds": round(secs, 2),
            "events_per_s": round(len(evs) / secs), "cpu_us_per_event": round(cpu_s / len(evs) * 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--kafka", action="store_true")
    args = ap.parse_args()
    evs = events(args.events)
    if args.kafka:
        from bench.evaluator.bench_evaluator import endpoints

        bootstrap, redis_url, stack = endpoints()
        try:
            print(json.dumps([kafka_run(bootstrap, redis_url, evs, ["deviceId"], False),
                              kafka_run(bootstrap, redis_url, evs, ["site"], False),
                              kafka_run(bootstrap, redis_url, evs, ["site"], True)]))
        finally:
            if stack is not None:
                stack.stop()
        return
    # by site without the repartition stage is the old, per-partition (wrong) evaluation: the
    # difference to the same rule with it is what the stage costs in CPU
    rows = [run(evs, ["deviceId"], False), run(evs, ["site"], False), run(evs, ["site"], True)]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
