"""One pipeline of real worker processes on the session's Kafka and Redis, for the chaos suite.

A ``Rig`` writes a PipelineConfig file (unique topics, group and Redis prefix, the generator's
rules, one webhook channel to the session's receiver), creates the topics and runs the ingestor,
evaluator(s) and deliverer(s) as ``alertpipe <role>`` processes — the workers' local mode, as the
pod runner starts them — so a test can SIGKILL any of them and start it again on the same port and
static group member id. ``stream()`` runs the generator in a thread while the test injects faults.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from alertpipe.generate import Ledger, Plan, Scenario, generate
from alertpipe.workers.config import PipelineConfig
from devstack.pipeline import ThreadedReceiver, wait_for
from devstack.processes import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "chaos-key-0123456789abcdef"
PARTITIONS = 3
ASSIGNED = "alertpipe_evaluator_assigned_partitions"


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:  # noqa: S310
        return bytes(r.read()).decode()


def status_of(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


@dataclass
class Worker:
    """One ``alertpipe <role>`` process; ``kill9()`` and ``start()`` keep its port and member id.
    A devstack ManagedProcess: tied to the test session (parent-death signal), its own group."""

    role: str
    argv: list[str]
    log: Path
    port: int
    starts: int = 0
    proc: ManagedProcess | None = None
    wanted: bool = False  # started and not stopped by the test: it must be running

    def start(self) -> Worker:
        self.starts += 1
        if self.proc is None:
            self.proc = ManagedProcess(self.role, self.argv, self.log, env={"PYTHONUNBUFFERED": "1"},
                                       cwd=ROOT, stop_timeout=40)
        self.proc.start()
        self.wanted = True
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def kill9(self) -> None:
        assert self.proc is not None
        self.wanted = False
        self.proc.stop(kill=True)

    def stop(self) -> None:
        """SIGTERM (a clean drain), SIGKILL after 40 s."""
        self.wanted = False
        if self.proc is not None:
            self.proc.stop()

    def ready(self) -> bool:
        if not self.running():
            code = self.proc.exit_code() if self.proc else None
            raise AssertionError(f"{self.role} exited ({code}):\n{self.tail()}")
        return status_of(self.port, "/readyz") == 200

    def metric(self, name: str) -> float:
        try:
            return metric_sum(scrape(self.port), name)
        except OSError:
            return -1.0

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Fault:
    name: str
    start: float
    end: float = 0.0


@dataclass
class Rig:
    """A pipeline (config file, topics) and its worker processes; see the module docstring."""

    name: str
    bootstrap: str
    redis_url: str
    receiver: ThreadedReceiver
    work: Path
    replication: int = 1  # -1: the cluster's default (as the operator creates topics)
    lateness: str = "5s"
    idle_timeout: str = "4s"
    channel: dict[str, Any] = field(default_factory=dict)  # overrides of the webhook channel spec
    workers: dict[str, list[Worker]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    config: PipelineConfig | None = None

    @property
    def hook_path(self) -> str:
        return f"/webhook/{self.name}"

    @property
    def config_path(self) -> Path:
        return self.work / "pipeline.json"

    def topics(self) -> dict[str, str]:
        n = self.name
        return {"events": f"{n}.events", "alerts": f"{n}.alerts", "late": f"{n}.late",
                "deadLetter": f"{n}.dlq", "audit": f"{n}.audit", "retry": f"{n}.retry"}

    def setup(self, scenario: Scenario) -> None:
        """Topics, the API key file and the config with the scenario's rules."""
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "keys").write_text(f"{scenario.tenant}:{API_KEY}\n")
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        t = self.topics()
        parts = {"events": PARTITIONS, "alerts": 2, "retry": 2}
        new = [NewTopic(name, parts.get(kind, 1), self.replication) for kind, name in t.items()]
        for f in admin.create_topics(new).values():
            f.result(60)
        url = self.receiver.receiver.url(self.hook_path)
        channel = {"name": "ops", "webhook": {"url": url, "timeout": "3s"},
                   "retry": {"initialBackoff": "100ms", "maxBackoff": "1s", "maxAttempts": 100,
                             "maxAge": "10m"}}
        channel.update(self.channel)
        rules = [{"name": r["name"], "spec": r["spec"]} for r in Plan(scenario, 0).rules()]
        self.write({
            "tenant": scenario.tenant, "pipeline": scenario.pipeline,
            "kafka": {"bootstrapServers": self.bootstrap, "topics": t},
            "redis": {"url": self.redis_url, "keyPrefix": self.name},
            "allowedLateness": self.lateness, "idleTimeout": self.idle_timeout,
            "delivery": {"allowPrivateNetworks": True},
            "channels": [channel], "rules": rules,
        })

    def write(self, body: dict[str, Any]) -> None:
        self.config = PipelineConfig.model_validate(body).with_revision()
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_bytes(self.config.to_json())
        os.replace(tmp, self.config_path)

    # --- workers ------------------------------------------------------------------------------

    def add(self, role: str, *, static: bool = True, extra: tuple[str, ...] = ()) -> Worker:
        """A new ``role`` worker, started. ``static``: a group member id (kill -9 and restart get the
        partitions back at once); dynamic members leave the group when stopped (scaling down)."""
        i = len(self.workers.setdefault(role, []))
        port = free_port()
        argv = [sys.executable, "-m", "alertpipe", "--log-level=INFO", role,
                "--config", f"file:{self.config_path}"]
        if role == "ingestor":
            argv += ["--host", "127.0.0.1", "--port", str(port), "--api-keys-file", str(self.work / "keys")]
        else:
            argv += ["--metrics-host", "127.0.0.1", "--metrics-port", str(port)]
            if static:
                argv += ["--instance-id", f"{self.name}-{role}-{i}"]
        if role == "deliverer":
            argv += ["--claim-ttl", "3", "--breaker-cooldown", "0.5"]
        if role == "evaluator":
            argv += ["--checkpoint-interval", "0.5"]
        w = Worker(role, argv + list(extra), self.work / f"{role}-{i}.log", port)
        self.workers[role].append(w)
        return w.start()

    def start(self, evaluators: int = 1, deliverers: int = 1) -> None:
        self.add("ingestor")
        for _ in range(evaluators):
            self.add("evaluator")
        for _ in range(deliverers):
            self.add("deliverer")
        self.wait_ready()

    def live(self, role: str) -> list[Worker]:
        return [w for w in self.workers.get(role, []) if w.running()]

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if not all(w.ready() for ws in self.workers.values() for w in ws if w.wanted):
                return False
            assigned = sum(w.metric(ASSIGNED) for w in self.live("evaluator"))
            return assigned >= PARTITIONS

        wait_for(ready, f"{self.name}: workers ready, evaluators assigned", timeout, every=0.2)

    def stop(self) -> None:
        for ws in self.workers.values():
            for w in ws:
                w.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name}\n{w.tail(25)}" for ws in self.workers.values() for w in ws)

    @contextmanager
    def fault(self, name: str) -> Iterator[Fault]:
        """Times a fault: from entering the block to leaving it (the fault cleared)."""
        f = Fault(name, time.time())
        self.faults.append(f)
        try:
            yield f
        finally:
            f.end = time.time()

    # --- traffic ------------------------------------------------------------------------------

    def stream(self, scenario: Scenario, chaos: Callable[[float], None] | None = None,
               retry_for: float = 20.0) -> Ledger:
        """Send ``scenario`` to the ingestor (clients retry for ``retry_for`` s); meanwhile call
        ``chaos(t0)`` in this thread (t0: the stream's start, epoch seconds). The ledger."""
        url = f"http://127.0.0.1:{self.workers['ingestor'][0].port}/v1/events"
        out: dict[str, Ledger | BaseException] = {}

        def send() -> None:
            try:
                out["ledger"] = generate(scenario, url=url, api_key=API_KEY, batch=100, start_in=0.5,
                                         retry_for=retry_for)
            except BaseException as e:  # re-raised in the test's thread
                out["error"] = e

        t0 = time.time() + 0.5
        sender = threading.Thread(target=send, name="generate", daemon=True)
        sender.start()
        try:
            if chaos is not None:
                chaos(t0)
        finally:
            sender.join(scenario.duration + retry_for + 60)
        if "error" in out:
            raise out["error"]  # type: ignore[misc]
        ledger = out["ledger"]
        assert isinstance(ledger, Ledger)
        return ledger

    def committed_all(self, role: str = "evaluator") -> bool:
        """Every events (or alerts) partition committed up to its end by the role's group."""
        cfg = self.config
        assert cfg is not None
        topic = cfg.kafka.topics.events if role == "evaluator" else cfg.kafka.topics.alerts
        group = {"evaluator": f"alertpipe-{cfg.tenant}-{cfg.pipeline}-evaluator",
                 "deliverer": f"alertpipe.{cfg.tenant}.{cfg.pipeline}.deliverer"}[role]
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
            tps = c.committed([TopicPartition(topic, p) for p in range(n)], timeout=10)
            ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(n)]
            return all(tp.offset == end for tp, end in zip(tps, ends, strict=True))
        except Exception as e:  # NOT_COORDINATOR and friends while the group moves: ask again
            if getattr(e, "args", None) and isinstance(e.args[0], KafkaError):
                return False
            raise
        finally:
            c.close()


def sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def leaders(bootstrap: str, topic: str) -> Counter[int]:
    """How many of ``topic``'s partitions each broker (node id) leads."""
    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    return Counter(p.leader for p in md.topics[topic].partitions.values())
