"""What spec.tracing costs the hot path: the evaluator's per-batch work (decode, dedup, rules,
produce) and the ingestor's per-request work (validate, produce, answer), on in-memory collaborators
(no broker, no Redis: the figures are the CPU of our code, which tracing could slow).

Modes, each in a fresh process, rounds alternating (the machine is shared; load recorded):
- ``base``: the sources of a base revision (``git archive``), before tracing existed;
- ``off``: this checkout, no spec.tracing (the default);
- ``unsampled``: spec.tracing with sampleRatio 0: the ingestor asks the sampler per request, the
  evaluator reads every record's headers (none carry a context);
- ``sampled``: sampleRatio 1: every request a span, every record a traceparent, every alert and its
  span (spans handed to a discarding exporter: the SDK's cost, not a collector's).
Prints JSON, writes bench/tracing/results.json.

    .venv/bin/python -m bench.tracing.bench_overhead [--base HEAD~3] [--rounds 5] [--events 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCES = ("alertpipe", "workers", "operator")
MODES = ("base", "off", "unsampled", "sampled")
TID = "4bf92f3577b34da6a3ce929d0e0e4736"


# --- in-memory collaborators (the scenario runs these against either source tree) -----------------


@dataclass
class Msg:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, int(time.time() * 1000))

    def error(self) -> None:
        return None


@dataclass
class Sink:
    """Producer and consumer in one: the evaluator's outputs counted, its input never read by it."""

    produced: int = 0
    callbacks: dict[str, Any] = field(default_factory=dict)

    def produce(self, topic: str, value: Any = None, key: Any = None, *args: Any, **kw: Any) -> None:
        self.produced += 1
        cb = kw.get("on_delivery") or (args[1] if len(args) > 1 else None)
        if cb is not None:
            cb(None, None)

    def poll(self, _t: float = 0) -> int:
        return 0

    def flush(self, _t: float = 0) -> int:
        return 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def assignment(self) -> list[Any]:
        return []

    def assign(self, partitions: list[Any]) -> None:
        return None

    def commit(self, **_kw: Any) -> None:
        return None

    def close(self) -> None:
        return None


class NoState:
    def check(self, keys: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
              ttl: int) -> bytes:
        return bytes(len(keys))

    def load_chain(self, partition: int) -> None:
        return None

    def save_chain(self, blobs: Any, gaps: Any = ()) -> None:
        return None


def config_doc(mode: str) -> dict[str, Any]:
    rules = [{"name": f"hot-{i}", "spec": {"select": {"types": [f"t{i % 4}"]},
                                          "threshold": {"condition": f"value > {80 + i}"}}}
             for i in range(20)]
    doc: dict[str, Any] = {
        "tenant": "bench", "pipeline": "main", "allowedLateness": "5s", "idleTimeout": "1h",
        "kafka": {"bootstrapServers": "127.0.0.1:1", "topics": {
            "events": "e", "alerts": "a", "late": "l", "deadLetter": "d", "audit": "u"}},
        "redis": {"url": "redis://127.0.0.1:1/0", "keyPrefix": "b"},
        "rules": rules,
    }
    if mode in ("unsampled", "sampled"):
        doc["tracing"] = {"endpoint": "http://127.0.0.1:9", "sampleRatio": 1.0 if mode == "sampled" else 0.0}
    return doc


def events(n: int, devices: int = 1000) -> list[dict[str, Any]]:
    t0 = int(time.time() * 1000) - 3_600_000
    seqs = [0] * devices
    out = []
    for i in range(n):
        d = i % devices
        out.append({"tenant": "bench", "deviceId": f"dev-{d}", "seq": seqs[d], "ts": t0 + i,
                    "type": f"t{i % 4}", "value": 99.0 if i % 97 == 0 else float(i % 80)})
        seqs[d] += 1
    return out


def tracing_holder(role: str) -> Any:
    """This checkout's holder with a discarding exporter (``sampled`` and ``unsampled`` only)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from alertpipe.workers.tracing import TracingHolder

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return TracingHolder(role, exporter=Discard())


def run_evaluator(mode: str, n: int, batch: int) -> dict[str, Any]:
    from confluent_kafka import TopicPartition

    from alertpipe.workers.config import PipelineConfig, StaticConfigSource
    from alertpipe.workers.evaluator.clients import EvaluatorClients
    from alertpipe.workers.evaluator.worker import Evaluator, EvaluatorOptions

    cfg = PipelineConfig.model_validate(config_doc(mode)).with_revision()
    sink = Sink()
    ev = Evaluator(StaticConfigSource(cfg), options=EvaluatorOptions(checkpoint_interval=3600),
                   clients=EvaluatorClients(sink, sink, NoState()))
    if mode != "base":
        ev.tracing = tracing_holder("evaluator")
        ev.tracing.update(cfg.tracing, cfg.tenant, cfg.pipeline)
    ev._on_assign(sink, [TopicPartition("e", 0)])  # type: ignore[arg-type]  # noqa: SLF001 - the bench drives it
    hdr = [("traceparent", f"00-{TID}-{os.getpid():016x}-01".encode())] if mode == "sampled" else None
    msgs = [Msg("e", 0, i, e["deviceId"].encode(), orjson.dumps(e), hdr) for i, e in enumerate(events(n))]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, batch):
        ev.process(msgs[i:i + batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"events": n, "alerts": sink.produced, "events_per_s": round(n / wall),
            "cpu_us_per_event": round(cpu / n * 1e6, 3)}


class FakeProducer:
    ready = True
    inflight = 0
    not_ready_reason = ""

    async def send(self, records: list[Any], topic: str | None = None, headers: Any = None) -> Any:
        from alertpipe.workers.ingestor.producer import BatchResult

        return BatchResult(len(records), 0, None, 0.0)


def run_ingestor(mode: str, requests: int, per_request: int) -> dict[str, Any]:
    import asyncio

    from alertpipe.workers.config import PipelineConfig
    from alertpipe.workers.ingestor.accept import publish
    from alertpipe.workers.ingestor.metrics import IngestorMetrics

    cfg = PipelineConfig.model_validate(config_doc(mode)).with_revision()
    metrics = IngestorMetrics()
    body = events(per_request)
    kw: dict[str, Any] = {}
    if mode != "base":
        holder = tracing_holder("ingestor")
        kw["tracing"] = holder.update(cfg.tracing, cfg.tenant, cfg.pipeline)

    async def go() -> tuple[float, float]:
        producer = FakeProducer()
        now = int(time.time() * 1000)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(requests):
            answer = await publish(body, None, cfg, producer, metrics, now, None, **kw)  # type: ignore[arg-type]
            assert answer.status == 202
        return time.perf_counter() - t0, time.process_time() - c0

    wall, cpu = asyncio.run(go())
    return {"requests": requests, "events_per_request": per_request, "requests_per_s": round(requests / wall),
            "cpu_us_per_request": round(cpu / requests * 1e6, 2)}


def scenario(args: argparse.Namespace) -> None:
    out = {"evaluator": run_evaluator(args.mode, args.events, args.batch),
           "ingestor": run_ingestor(args.mode, args.requests, args.per_request)}
    print(json.dumps(out))


# --- the driver -----------------------------------------------------------------------------------


def layout(src: Path, dest: Path) -> Path:
    """``dest`` as a sys.path entry with the wheel's import layout, this bench beside it."""
    shutil.copytree(src / "alertpipe", dest / "alertpipe")
    for name in ("workers", "operator"):
        shutil.copytree(src / name, dest / "alertpipe" / name)
    (dest / "bench").symlink_to(ROOT / "bench")
    return dest


def base_sources(rev: str, scratch: Path) -> Path:
    out = scratch / "base-src"
    out.mkdir()
    archive = subprocess.run(["git", "archive", rev, *SOURCES], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run_mode(path_entry: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(path_entry), "PYTHONSAFEPATH": "1"}
    cmd = [sys.executable, "-m", "bench.tracing.bench_overhead", "--scenario", "--mode", mode,
           "--events", str(args.events), "--batch", str(args.batch), "--requests", str(args.requests),
           "--per-request", str(args.per_request)]
    out = subprocess.run(cmd, capture_output=True, cwd=path_entry, env=env, check=False, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} failed: {out.stderr.decode()[-3000:]}")
    return dict(orjson.loads(out.stdout.splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="off", choices=MODES)
    ap.add_argument("--base", default="HEAD~4", help="revision before tracing (default HEAD~4)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--per-request", type=int, default=100)
    args = ap.parse_args()
    if args.scenario:
        scenario(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        trees = {"base": layout(base_sources(args.base, scratch), scratch / "base"),
                 "head": layout(ROOT, scratch / "head")}
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                r = run_mode(trees["base" if mode == "base" else "head"], mode, args)
                r["load"] = float(Path("/proc/loadavg").read_text().split()[0])
                runs[mode].append(r)
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    summary: dict[str, Any] = {"base": base_rev, "rounds": args.rounds, "modes": {}}
    for mode, rs in runs.items():
        summary["modes"][mode] = {
            "evaluator_events_per_s": statistics.median(r["evaluator"]["events_per_s"] for r in rs),
            "evaluator_cpu_us_per_event": statistics.median(r["evaluator"]["cpu_us_per_event"] for r in rs),
            "evaluator_alerts": rs[0]["evaluator"]["alerts"],
            "ingestor_requests_per_s": statistics.median(r["ingestor"]["requests_per_s"] for r in rs),
            "ingestor_cpu_us_per_request": statistics.median(r["ingestor"]["cpu_us_per_request"] for r in rs),
            "load": [r["load"] for r in rs],
        }
    b = summary["modes"]["base"]
    for mode in MODES[1:]:
        s = summary["modes"][mode]
        for stage, unit in (("evaluator", "event"), ("ingestor", "request")):
            key = f"{stage}_cpu_us_per_{unit}"
            s[f"{stage}_cpu_vs_base"] = round(s[key] / b[key], 3)
    summary["args"] = {k: getattr(args, k) for k in ("events", "batch", "requests", "per_request")}
    text = json.dumps(summary, indent=1)
    print(text)
    (HERE / "results.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
