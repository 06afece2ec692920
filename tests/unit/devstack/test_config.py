"""Pure parts of the devstack: pinned versions, generated configs, env files, run-dir pruning."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml

from devstack.kafka import broker_properties, log4j2_properties, new_cluster_id
from devstack.kafka_cluster import cluster_properties
from devstack.kube import FAKE_NODE_ANNOTATION, fake_node, kubeconfig_yaml
from devstack.stack import StackEnv, prune_run_dirs
from devstack.supervisor import write_env_file
from devstack.versions import load_versions, parse_env_file

pytestmark = pytest.mark.unit


def test_versions_come_from_the_one_file() -> None:
    v = load_versions()
    assert v.kubernetes.startswith("v1.") and v.etcd.startswith("v3.6.")
    assert v.kafka.startswith("4.")


def test_parse_env_file_handles_comments_quotes_and_export() -> None:
    text = "# c\n\nA=1\nexport B='two words'\nC=\"x=y\"\n"
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "x=y"}
    with pytest.raises(ValueError, match="line 1"):
        parse_env_file("not an assignment")


def test_missing_version_is_named(tmp_path: Path) -> None:
    f = tmp_path / "versions.env"
    f.write_text("KUBERNETES_VERSION=v1.36.3\n")
    with pytest.raises(ValueError, match="ETCD_VERSION"):
        load_versions(f)


def test_kafka_cluster_id_is_a_base64url_uuid() -> None:
    cid = new_cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert new_cluster_id() != cid
    # 1 id in 64 would start with "-" (the storage tool then reads it as an option): never one
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_broker_properties_single_node_kraft() -> None:
    props = dict(
        line.split("=", 1) for line in broker_properties(9092, 9093, Path("/d"), partitions=4).splitlines()
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "4"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert all(v.count("://") == 0 or "127.0.0.1" in v for v in props.values())  # loopback only


@pytest.mark.parametrize(("nodes", "rf", "isr"), [(3, "3", "2"), (2, "2", "1"), (5, "3", "2")])
def test_cluster_properties_name_the_quorum_and_replicate_by_size(nodes: int, rf: str, isr: str) -> None:
    ports = [(9000 + 2 * i, 9001 + 2 * i) for i in range(nodes)]
    props = dict(line.split("=", 1) for line in cluster_properties(2, ports, Path("/d")).splitlines())
    assert props["node.id"] == "2"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9003"
    voters = ",".join(f"{i + 1}@127.0.0.1:{9001 + 2 * i}" for i in range(nodes))
    assert props["controller.quorum.voters"] == voters
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert props[key] == rf, key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == isr


def test_log4j2_config_is_properties_format() -> None:
    text = log4j2_properties()
    assert "rootLogger.appenderRef" in text and "log4j.rootLogger" not in text


def test_kubeconfig_has_token_and_ca(tmp_path: Path) -> None:
    doc = yaml.safe_load(kubeconfig_yaml("https://127.0.0.1:6443", tmp_path / "ca.crt", "tok"))
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert doc["users"][0]["user"] == {"token": "tok"}
    assert doc["current-context"] == doc["contexts"][0]["name"]


def test_fake_node_is_managed_by_kwok_and_schedulable() -> None:
    node = fake_node("n1", labels={"x": "y"})
    assert node["metadata"]["annotations"][FAKE_NODE_ANNOTATION[0]] == FAKE_NODE_ANNOTATION[1]
    assert node["metadata"]["labels"]["x"] == "y"
    assert node["spec"]["taints"] == []
    assert node["status"]["allocatable"]["pods"] == "1000"  # room for 100 pipelines x 3 pods


def test_env_file_round_trip(tmp_path: Path) -> None:
    env = {"ALERTPIPE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "KUBECONFIG": "/k"}
    write_env_file(tmp_path / "devstack.env", env)
    loaded = StackEnv.load(tmp_path / "devstack.env")
    assert loaded.values == env
    assert loaded.get("kafka") == "127.0.0.1:1"
    with pytest.raises(RuntimeError, match="ALERTPIPE_REDIS_URL"):
        loaded.get("redis")


def test_prune_keeps_newest_and_live_sessions(tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above the default pid_max: no such process
    names = [f"pytest-20260101-00000{i}-{dead}" for i in range(5)] + [f"pytest-20250101-000000-{os.getpid()}"]
    for n in names:
        (tmp_path / n).mkdir()
    prune_run_dirs(tmp_path, "pytest", keep=2)
    left = sorted(p.name for p in tmp_path.iterdir())
    # the two newest stay; of the older ones only the live session's directory survives
    assert left == sorted([names[3], names[4], names[5]])
