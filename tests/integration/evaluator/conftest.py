"""Fixtures of the evaluator's integration tests: topics, a config file, evaluator processes, readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from alertpipe.workers.config import PipelineConfig
from devstack.processes import free_port

ROOT = Path(__file__).resolve().parents[3]
PARTITIONS = 3


def partition_of(device: str, partitions: int = PARTITIONS) -> int:
    return zlib.crc32(device.encode()) % partitions


def wait_for(check: Any, what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Pipeline:
    bootstrap: str
    redis_url: str
    name: str
    path: Path
    rules: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def topics(self) -> dict[str, str]:
        n = self.name
        return {
            "events": f"{n}-events",
            "alerts": f"{n}-alerts",
            "late": f"{n}-late",
            "deadLetter": f"{n}-dlq",
            "audit": f"{n}-audit",
        }

    def config(self) -> PipelineConfig:
        body = {
            "tenant": "acme",
            "pipeline": "main",
            "kafka": {"bootstrapServers": self.bootstrap, "topics": self.topics},
            "redis": {"url": self.redis_url, "keyPrefix": f"ap:{self.name}"},
            "allowedLateness": "5s",
            "idleTimeout": "1h",
            "rules": self.rules,
            **self.extra,
        }
        return PipelineConfig.model_validate(body).with_revision()

    def write(self) -> PipelineConfig:
        cfg = self.config()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(cfg.to_json())
        os.replace(tmp, self.path)
        return cfg

    def produce(self, records: list[tuple[str, bytes]]) -> None:
        """(deviceId, raw bytes) in order; the partition is fixed by partition_of(deviceId)."""
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        topic = self.topics["events"]
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for i, (dev, raw) in enumerate(records):
            p.produce(topic, raw, dev.encode(), partition=partition_of(dev), on_delivery=report)
            if i % 10_000 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        assert not errors, errors[:3]

    def read(
        self, topic_kind: str, *, min_count: int = 0, timeout: float = 60.0, quiet: float = 1.5
    ) -> list[Any]:
        """Every record of a topic (values decoded as JSON when they are), waiting for ``min_count``."""
        topic = self.topics[topic_kind]
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
            }
        )
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        try:
            while time.monotonic() < deadline:
                msgs = c.consume(5000, 0.3)
                for m in msgs:
                    assert m.error() is None, m.error()
                    try:
                        out.append(orjson.loads(m.value() or b""))
                    except orjson.JSONDecodeError:
                        out.append({"raw": m.value(), "headers": dict(m.headers() or [])})
                if msgs:
                    last_new = time.monotonic()
                if len(out) >= min_count and time.monotonic() - last_new >= quiet:
                    break
        finally:
            c.close()
        return out

    def end_offsets(self) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "offsets-probe"})
        try:
            return {
                p: c.get_watermark_offsets(TopicPartition(self.topics["events"], p), timeout=10)[1]
                for p in range(PARTITIONS)
            }
        finally:
            c.close()


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Pipeline:
    pipe = Pipeline(kafka_bootstrap, redis_url, unique, tmp_path / "config.json", rules=[])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = pipe.topics
    new = [NewTopic(topics["events"], PARTITIONS, 1)] + [
        NewTopic(topics[k], 1, 1) for k in ("alerts", "late", "deadLetter", "audit")
    ]
    for fut in admin.create_topics(new).values():
        fut.result(timeout=30)
    wait_for(lambda: all(t in admin.list_topics(timeout=5).topics for t in topics.values()), "topics", 30)
    return pipe


class EvaluatorProcess:
    """``alertpipe evaluator`` as a real process (so it can be SIGKILLed)."""

    def __init__(
        self,
        pipe: Pipeline,
        log_dir: Path,
        *,
        batch_size: int = 5000,
        checkpoint_interval: float = 0.5,
        group: str | None = None,
    ) -> None:
        self.pipe = pipe
        self.log_dir = log_dir
        self.batch_size = batch_size
        self.checkpoint_interval = checkpoint_interval
        self.group = group or f"{pipe.name}-evaluator"
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.starts = 0

    def start(self) -> EvaluatorProcess:
        self.starts += 1
        self.metrics_port = free_port()
        log = (self.log_dir / f"evaluator-{id(self)}-{self.starts}.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "alertpipe",
            "--log-level=INFO",
            "evaluator",
            "--config",
            f"file:{self.pipe.path}",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--batch-size",
            str(self.batch_size),
            "--checkpoint-interval",
            str(self.checkpoint_interval),
            "--group",
            self.group,
            "--instance-id",
            f"{self.group}-{id(self)}",
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read()  # noqa: S310
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric(self, prefix: str) -> float:
        if not self.running():
            raise AssertionError(f"the evaluator exited:\n{self.log_text()[-3000:]}")
        try:
            samples = self.metrics()
        except OSError:
            return 0.0
        return sum(v for k, v in samples.items() if k == prefix or k.startswith(prefix + "{"))

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"evaluator-{id(self)}-*.log"))
        )


@pytest.fixture
def evaluators(pipeline: Pipeline, tmp_path: Path) -> Iterator[list[EvaluatorProcess]]:
    made: list[EvaluatorProcess] = []
    yield made
    # Shown by pytest only when the test failed: what each evaluator process said last.
    for log in sorted(tmp_path.glob("evaluator-*.log"), key=lambda f: f.stat().st_mtime)[-3:]:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print(f"--- {log.name} (last {len(tail)} lines)", *tail, sep="\n")
    for e in made:
        if e.running():
            assert e.proc is not None
            e.proc.send_signal(signal.SIGKILL)
            e.proc.wait(30)
