"""Fixtures for the deliverer's integration tests: a pipeline on the devstack's Kafka and Redis, local
receivers, a secrets folder, and helpers to run the deliverer in-process or as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alertpipe.workers.alerts import Alert, alert_id
from alertpipe.workers.config import PipelineConfig, SecretKeyRef, StaticConfigSource
from alertpipe.workers.deliverer.reading import read_topic
from alertpipe.workers.deliverer.records import (
    AuditEntry,
    DeadLetter,
    Parked,
    dead_letter_from_json,
    expand_received,
)
from alertpipe.workers.deliverer.settings import DelivererSettings
from alertpipe.workers.deliverer.worker import Deliverer
from alertpipe.workers.secrets import SecretResolver
from tests.receivers import HttpReceiver, SmtpReceiver, start_http_receiver, start_smtp_receiver

ROOT = Path(__file__).resolve().parents[3]
WEBHOOK_SECRET = "whsec-test-0123456789"
PD_ROUTING_KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's integration keys
SLACK_TOKEN = "T000/B000/XXXX"


@dataclass
class Pipeline:
    """One test pipeline: unique topics and Redis prefix, a config to edit, a secrets folder."""

    bootstrap: str
    redis_url: str
    name: str
    secrets_dir: Path
    config_path: Path
    partitions: int = 3
    retry_topic: bool = True  # False: the pipeline has no retry topic (retries wait in memory)
    config: PipelineConfig = field(init=False)

    def __post_init__(self) -> None:
        t = self.name
        self.config = PipelineConfig.model_validate(
            {
                "tenant": "acme",
                "pipeline": "p" + t[-8:],
                "kafka": {
                    "bootstrapServers": self.bootstrap,
                    "topics": {
                        "events": f"{t}.events",
                        "alerts": f"{t}.alerts",
                        "late": f"{t}.late",
                        "deadLetter": f"{t}.dlq",
                        "audit": f"{t}.audit",
                        **({"retry": f"{t}.retry"} if self.retry_topic else {}),
                    },
                },
                "redis": {"url": self.redis_url, "keyPrefix": t},
                "delivery": {"allowedNetworks": ["127.0.0.0/8", "::1/128"]},  # the local receivers only
            }
        ).with_revision()
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topics = self.config.kafka.topics
        fs = admin.create_topics(
            [NewTopic(topics.alerts, self.partitions, 1)]
            + [NewTopic(x, 1, 1) for x in (topics.dead_letter, topics.audit)]
            + ([NewTopic(topics.retry, 2, 1)] if topics.retry else [])
        )
        for f in fs.values():
            f.result(30)
        self.write()

    def update(self, **changes: Any) -> PipelineConfig:
        data = self.config.model_dump(mode="json", by_alias=True, exclude={"revision"})
        data.update(changes)
        self.config = PipelineConfig.model_validate(data).with_revision()
        self.write()
        return self.config

    def write(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_bytes(self.config.to_json())
        tmp.replace(self.config_path)

    # --- alerts in, records out -----------------------------------------------------------------

    def produce(self, alerts: list[Alert], headers: Any = None) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        for a in alerts:
            p.produce(self.config.kafka.topics.alerts, key=a.id, value=a.to_json(), headers=headers)
            p.poll(0)
        assert p.flush(30) == 0

    def dead_letters(self) -> list[DeadLetter]:
        opts = {"bootstrap.servers": self.bootstrap}
        out = [
            dead_letter_from_json(m.value()) for m in read_topic(opts, self.config.kafka.topics.dead_letter)
        ]
        return [d for d in out if d is not None]

    def audit(self) -> list[AuditEntry]:
        opts = {"bootstrap.servers": self.bootstrap}
        raw = [AuditEntry.from_json(m.value()) for m in read_topic(opts, self.config.kafka.topics.audit)]
        return expand_received(raw)  # as `alertpipe explain` shows them

    def committed(self, group: str) -> int:
        """Sum of committed offsets of the alerts topic for ``group`` (-1001 → 0)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            tps = [TopicPartition(self.config.kafka.topics.alerts, p) for p in range(self.partitions)]
            return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
        finally:
            c.close()

    def parked(self) -> list[tuple[Parked, bytes]]:
        """Every record on the retry topic: (headers decoded, the alert's JSON)."""
        assert self.config.kafka.topics.retry
        opts = {"bootstrap.servers": self.bootstrap}
        return [
            (Parked.from_headers(m.headers()), m.value())
            for m in read_topic(opts, self.config.kafka.topics.retry)
        ]

    def group(self) -> str:
        return f"alertpipe.{self.config.tenant}.{self.config.pipeline}.deliverer"


def make_alert(n: int, channels: list[str], status: str = "firing", **kw: Any) -> Alert:
    aid = alert_id("acme", "prod", "cpu-high", f"deviceId=d{n}", 1_760_000_000_000)
    base: dict[str, Any] = dict(
        id=aid,
        status=status,
        tenant="acme",
        pipeline="prod",
        rule="cpu-high",
        severity="critical",
        group_key=f"deviceId=d{n}",
        labels={"team": "infra"},
        annotations={"summary": f"CPU high on d{n}"},
        values={"value": 93.5},
        channels=channels,
        starts_at_ms=1_760_000_000_000,
        event_time_ms=1_760_000_000_000,
        processed_at_ms=int(time.time() * 1000),
    )
    if status == "resolved":
        base["ends_at_ms"] = 1_760_000_060_000
    base.update(kw)
    return Alert.model_validate(base)


def webhook(name: str, url: str, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "webhook": {
            "url": url,
            "timeout": kw.pop("timeout", "2s"),
            "signingSecretRef": {"name": "hooks", "key": "signing"},
        },
    }
    spec["retry"] = kw.pop(
        "retry", {"maxAttempts": 4, "maxAge": "30s", "initialBackoff": "50ms", "maxBackoff": "300ms"}
    )
    spec.update(kw)
    return spec


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    for name, key, value in (
        ("hooks", "signing", WEBHOOK_SECRET),
        ("pd", "routing-key", PD_ROUTING_KEY),
        ("smtp", "username", "alertpipe"),
        ("smtp", "password", "hunter2"),
    ):
        (d / name).mkdir(parents=True, exist_ok=True)
        (d / name / key).write_text(value + "\n")
    return d


@pytest.fixture
def pipeline(
    kafka_bootstrap: str, redis_url: str, unique: str, secrets_dir: Path, tmp_path: Path
) -> Pipeline:
    return Pipeline(kafka_bootstrap, redis_url, unique, secrets_dir, tmp_path / "pipeline.json")


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    r = await start_http_receiver()
    r.secrets["/webhook/"] = WEBHOOK_SECRET.encode()
    r.slack_tokens.add(SLACK_TOKEN.replace("/", "-"))
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    s = start_smtp_receiver("alertpipe", "hunter2")
    try:
        yield s
    finally:
        s.stop()


class FileSource(StaticConfigSource):
    """The Pipeline's current config, re-read on every call (edits take effect at once)."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(pipeline.config)
        self._p = pipeline

    def current(self) -> PipelineConfig | None:
        return self._p.config


@contextlib.asynccontextmanager
async def running_deliverer(pipeline: Pipeline, **settings: Any) -> AsyncIterator[Deliverer]:
    """A Deliverer in this event loop (with the test's receivers) until the block ends."""
    resolver = SecretResolver(pipeline.secrets_dir)

    def secret(ref: SecretKeyRef) -> str:
        return resolver.resolve(ref).get_secret_value()

    settings.setdefault("breaker_cooldown", 0.5)
    settings.setdefault("claim_ttl", 5.0)
    d = Deliverer(FileSource(pipeline), secret, DelivererSettings(**settings))
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await asyncio.wait_for(_ready(d, task), 60)
        yield d
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _ready(d: Deliverer, task: asyncio.Task[None]) -> None:
    while not d.ready.is_set():
        if task.done():
            task.result()
            raise AssertionError("deliverer stopped before it was ready")
        await asyncio.sleep(0.05)


def deliverer_process(pipeline: Pipeline, *extra: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``alertpipe deliverer`` as a real process (for kill -9)."""
    argv = [
        sys.executable,
        "-m",
        "alertpipe",
        "--log-level=INFO",  # one token: alertpipe.cli picks the first bare word as the command
        "deliverer",
        "--config",
        f"file:{pipeline.config_path}",
        "--secrets-dir",
        str(pipeline.secrets_dir),
        "--metrics-port",
        "0",
        "--claim-ttl",
        "3",
        *extra,
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean drain), then SIGKILL if it has not exited within 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        kill9(proc)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]


Condition = Callable[[], bool]
