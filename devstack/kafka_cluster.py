"""A Kafka cluster of N KRaft nodes on loopback (each broker and controller in one JVM), for the
chaos suite and ``alertpipe devstack up --brokers 3``.

Replication as a production cluster of that size would have it: default replication factor
min(N, 3), ``min.insync.replicas`` RF - 1 (2 of 3), internal topics likewise, so a topic created
with the cluster's defaults (as the operator creates them) survives the loss of one broker with
``acks=all`` producers still acknowledged. One static controller quorum over all nodes: losing one
of three keeps the quorum; a dead broker is fenced after 4 s (``broker.session.timeout.ms``).
``kill(node)`` / ``restart(node)`` keep a node's ports and data.

With ``links=True`` clients reach each broker through a ``devstack.link.Link`` (a listener of its
own, ``CLIENT``, advertised at the link's port), while the brokers and the controllers talk
directly: ``cut(node)`` / ``heal(node)`` partition the clients from one broker that the cluster
still sees alive (the chaos suite's partial partition). ``bootstrap`` names the links then.
"""

from __future__ import annotations

import logging
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.kafka import KafkaServer, broker_properties, log4j2_properties, new_cluster_id
from devstack.link import Link
from devstack.processes import StartError, free_port, wait_until

__all__ = ["KafkaCluster", "cluster_properties"]

logger = logging.getLogger(__name__)


def cluster_properties(node: int, ports: list[tuple[int, int]], data_dir: Path, partitions: int = 3,
                       client: tuple[int, int] | None = None) -> str:
    """server.properties of node ``node`` (1-based) of a cluster whose (broker, controller) ports are
    ``ports``: the single-node settings with the quorum and the replication of the cluster's size.
    ``client``: (port, advertised port) of a CLIENT listener for clients that come through a link."""
    n = len(ports)
    rf = min(n, 3)
    isr = max(1, rf - 1)
    port, cport = ports[node - 1]
    base = broker_properties(port, cport, data_dir, partitions)
    props = dict(line.split("=", 1) for line in base.splitlines() if line)
    props.update({
        "node.id": str(node),
        "controller.quorum.voters": ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports)),
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(isr),
        # a restarted node takes its partitions' leadership back soon (the preferred replica)
        "leader.imbalance.check.interval.seconds": "5",
        # a dead broker is fenced (its partitions get new leaders) after 4 s, not Kafka's 9 s: on a
        # loaded 2-core machine the 9 s grew to 13 s, past what the chaos suite's idleTimeout allows
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    })
    if client is not None:
        listen, advertised = client
        props["listeners"] += f",CLIENT://127.0.0.1:{listen}"
        props["advertised.listeners"] += f",CLIENT://127.0.0.1:{advertised}"
        props["listener.security.protocol.map"] += ",CLIENT:PLAINTEXT"
    return "".join(f"{k}={v}\n" for k, v in props.items())


class _Node(KafkaServer):
    """One node of a cluster: its properties name the whole quorum; formatted with the cluster's id."""

    def __init__(self, cluster: KafkaCluster, node: int, **kw: object) -> None:
        self.cluster = cluster
        self.node = node
        super().__init__(cluster.libs, cluster.dir / f"node-{node}", **kw)  # type: ignore[arg-type]

    def _configure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        link = self.cluster.links[self.node - 1] if self.cluster.links else None
        client = (link.target_port, link.port) if link is not None else None
        (self.dir / "server.properties").write_text(
            cluster_properties(self.node, self.cluster.ports(), self.data_dir, client=client)
        )
        (self.dir / "log4j2.properties").write_text(log4j2_properties())
        if (self.data_dir / "meta.properties").exists():
            return
        cmd = [*self._java(), "kafka.tools.StorageTool", "format", "-t", self.cluster.cluster_id,
               "-c", str(self.dir / "server.properties")]
        with open(self.dir / "format.log", "wb") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False)
        if rc.returncode != 0:
            tail = "\n".join((self.dir / "format.log").read_text(errors="replace").splitlines()[-15:])
            raise StartError(f"kafka node {self.node}: StorageTool format failed ({rc.returncode}):\n{tail}")

    def healthy(self) -> bool:
        return True  # the cluster waits for every broker to register (a lone node has no quorum)


class KafkaCluster:
    """``brokers`` KRaft nodes; ``bootstrap`` lists them all."""

    def __init__(self, libs: Path, run_dir: Path, brokers: int = 3, *, tie_to_parent: bool = True,
                 jit: str = "fast", cds_archive: Path | None = None, heap: str = "384m",
                 links: bool = False) -> None:
        if brokers < 1:
            raise StartError("kafka: --brokers must be at least 1")
        self.libs = libs
        self.dir = run_dir
        self.cluster_id = new_cluster_id()
        self.links = [Link(free_port()) for _ in range(brokers)] if links else []
        self.nodes = [
            _Node(self, i + 1, port=free_port(), controller_port=free_port(), tie_to_parent=tie_to_parent,
                  jit=jit, cds_archive=cds_archive, heap=heap)
            for i in range(brokers)
        ]

    def ports(self) -> list[tuple[int, int]]:
        return [(n.port, n.controller_port) for n in self.nodes]

    @property
    def bootstrap(self) -> str:
        """What clients use: the links' ports with ``links``, else the brokers' own."""
        if self.links:
            return ",".join(f"127.0.0.1:{link.port}" for link in self.links)
        return ",".join(n.bootstrap for n in self.nodes)

    def cut(self, node: int) -> None:
        """Partition the clients from node ``node`` (1-based); the brokers still see it (``links``)."""
        self.links[node - 1].cut()

    def heal(self, node: int) -> None:
        self.links[node - 1].heal()

    @property
    def process(self) -> object | None:  # the pytest plugin's restart-after-test check
        return self.nodes[0].process

    def running(self) -> bool:
        return all(n.running() for n in self.nodes)

    def start(self, timeout: float = 120.0) -> None:
        """Start every node that is not running (together: the quorum needs a majority), then wait
        until every broker is registered and unfenced."""
        for link in self.links:
            link.start()
        down = [n for n in self.nodes if not n.running()]
        with ThreadPoolExecutor(max_workers=max(1, len(down))) as pool:
            for f in [pool.submit(n.start, timeout) for n in down]:
                f.result()
        n = len(self.nodes)
        wait_until(lambda: self.brokers_up() == n, f"kafka: {n} brokers registered", timeout)

    def brokers_up(self) -> int:
        from confluent_kafka.admin import AdminClient

        live = ",".join(n.bootstrap for n in self.nodes if n.running())
        if not live:
            return 0
        md = AdminClient({"bootstrap.servers": live, "log_level": 0}).list_topics(timeout=3)
        return len(md.brokers)

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` (1-based): a broker lost without a clean shutdown."""
        self.nodes[node - 1].stop(kill=True)

    def restart(self, node: int, timeout: float = 120.0) -> None:
        self.nodes[node - 1].start(timeout)
        self.start(timeout)

    def stop(self, *, kill: bool = False) -> None:
        """Stop every node at once (one by one, the last would wait for a quorum that is gone)."""
        def one(n: _Node) -> None:
            try:
                n.stop(kill=kill)
            except Exception:
                logger.exception("stopping kafka node %s", n.node)

        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(one, self.nodes))
        for link in self.links:
            link.stop()
