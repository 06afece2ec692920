"""A single-node Apache Kafka (KRaft, broker+controller in one JVM) on loopback, for tests and the demo.

Static quorum (``controller.quorum.voters``): with it Kafka 4.1's StorageTool formats without
``--standalone`` (that flag belongs to the dynamic quorum, ``controller.quorum.bootstrap.servers``).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from devstack.processes import ManagedProcess, StartError, free_port, port_open, start_with_fresh_ports

__all__ = ["KafkaServer", "broker_properties", "log4j2_properties", "new_cluster_id"]

logger = logging.getLogger(__name__)


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID as URL-safe base64 (22 characters), as Kafka's own tool makes it;
    never starting with '-', which the storage tool's command line would take for an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def broker_properties(port: int, controller_port: int, data_dir: Path, partitions: int = 3) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # 50 partitions by default: each is a log to create when the first group appears; 5 do for tests
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # otherwise every new consumer group waits 3 s before its first assignment
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "delete.topic.enable": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def log4j2_properties() -> str:
    """Kafka 4 logs through log4j2: a properties-format config (not the log4j 1 file of Kafka 3)."""
    return "\n".join(
        [
            "status = warn",
            "appender.out.type = Console",
            "appender.out.name = OUT",
            "appender.out.layout.type = PatternLayout",
            "appender.out.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.out.ref = OUT",
            "logger.kafka.name = kafka",
            "logger.kafka.level = INFO",
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
            "logger.statechange.name = state.change.logger",
            "logger.statechange.level = WARN",
            "logger.raft.name = org.apache.kafka.raft",
            "logger.raft.level = WARN",
            "",
        ]
    )


class KafkaServer:
    """One broker. ``start()`` formats on first use; ``stop()``/``start()`` keep the port and data."""

    def __init__(
        self,
        libs: Path,
        run_dir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        tie_to_parent: bool = True,
        jit: str = "fast",
        cds_archive: Path | None = None,
        cds_dump: Path | None = None,
    ) -> None:
        self.libs = libs
        self.dir = run_dir
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        # ports picked here may be taken by another process before the broker binds them: until the
        # first successful start they are picked again when that happens
        self._may_repick = port is None and controller_port is None
        self.heap = heap
        # "fast": C1 only (-XX:TieredStopAtLevel=1) nearly halves the JVM's start-up CPU (9 s -> 5 s
        # measured on 2 cores) at some cost in peak throughput; "full" for long-lived brokers that
        # benchmarks use. ALERTPIPE_KAFKA_JIT overrides either.
        self.jit = os.environ.get("ALERTPIPE_KAFKA_JIT") or jit
        # AppCDS: the broker's classes pre-parsed into an archive made at provisioning (JDK 17 dynamic
        # archive); start-up CPU 5.3 s -> 2.5-3.2 s measured. A stale archive is ignored by the JVM.
        self.cds_archive = cds_archive
        self.cds_dump = cds_dump
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def _java(self, broker: bool = False) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StartError("kafka: java not found on PATH (Kafka 4 needs Java 17+)")
        cds: list[str] = []
        if broker and self.cds_dump is not None:
            cds = [f"-XX:ArchiveClassesAtExit={self.cds_dump}"]
        elif self.cds_dump is None and self.cds_archive is not None and self.cds_archive.exists():
            cds = [f"-XX:SharedArchiveFile={self.cds_archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
        return [
            java,
            *cds,
            *(["-XX:TieredStopAtLevel=1"] if self.jit == "fast" else []),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            # one line per collection pause, beside kafka.log: a latency stall of the whole pipeline
            # can be held against the broker's pauses (bench/e2e reads it)
            f"-Xlog:gc:file={self.dir / 'gc.log'}:time,uptime:filecount=2,filesize=10m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _configure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "server.properties").write_text(
            broker_properties(self.port, self.controller_port, self.data_dir)
        )
        (self.dir / "log4j2.properties").write_text(log4j2_properties())
        if (self.data_dir / "meta.properties").exists():
            return
        cmd = [
            *self._java(),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.dir / "server.properties"),
            *self._format_extra(),
        ]
        with open(self.dir / "format.log", "wb") as log:
            rc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False
            ).returncode
        if rc != 0:
            tail = (self.dir / "format.log").read_text(errors="replace").splitlines()[-15:]
            raise StartError(f"kafka: StorageTool format failed (exit {rc}):\n" + "\n".join(tail))

    def _format_extra(self) -> list[str]:
        """More StorageTool arguments (devstack.secure adds its SCRAM user)."""
        return []

    def start(self, timeout: float = 90.0) -> None:
        if self.process is not None and self.process.running():
            return
        start_with_fresh_ports(lambda: self._start_once(timeout), self.stop, self._repick, self._may_repick)
        self._may_repick = False

    def _repick(self) -> None:
        self.port, self.controller_port = free_port(), free_port()

    @property
    def cluster_id(self) -> str | None:
        try:
            for line in (self.data_dir / "meta.properties").read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        except OSError:
            return None
        return None

    def _start_once(self, timeout: float) -> None:
        if not any(self.libs.glob("kafka_*.jar")):
            raise StartError(f"kafka: no broker jars in {self.libs}; run `alertpipe devstack provision`")
        self._configure()
        self.process = ManagedProcess(
            "kafka",
            [*self._java(broker=True), "kafka.Kafka", str(self.dir / "server.properties")],
            self.dir / "kafka.log",
            tie_to_parent=self.tie_to_parent,
            stop_timeout=30,
        )
        self.process.start()
        self.process.wait_healthy(lambda: port_open(self.port), f"listening on {self.bootstrap}", timeout)
        self.process.wait_healthy(self.healthy, "answering metadata requests", timeout)

    def healthy(self) -> bool:
        """Our broker answers (its cluster id, not another process that took the port)."""
        return kafka_healthy(self.bootstrap, cluster_id=self.cluster_id)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            self.process.stop(kill=kill)

    def running(self) -> bool:
        return self.process is not None and self.process.running()


def kafka_healthy(bootstrap: str, timeout: float = 3.0, cluster_id: str | None = None) -> bool:
    """True when the broker answers a metadata request and lists itself (registered and unfenced)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    md = admin.list_topics(timeout=timeout)
    if cluster_id is not None and md.cluster_id != cluster_id:
        raise StartError(f"{bootstrap} answers as Kafka cluster {md.cluster_id}, not ours ({cluster_id})")
    return len(md.brokers) >= 1


def exercise(bootstrap: str) -> None:
    """Create a topic, produce and consume a little: the broker code paths tests use."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = "devstack-warmup"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        fut.result(timeout=60)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "log_level": 3}
    )
    for i in range(100):
        producer.produce(topic, key=str(i % 5), value=b"x" * 100)
    producer.flush(60)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        got, deadline = 0, time.monotonic() + 60
        while got < 100 and time.monotonic() < deadline:
            got += len(consumer.consume(100, timeout=1.0))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
