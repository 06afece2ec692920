"""A port picked free but taken by someone else before the server binds it: picked again."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack.cached import kafka_cds_archive, kafka_libs
from devstack.kafka import KafkaServer
from devstack.redis import RedisServer
from devstack.stack import ensure_provisioned

pytestmark = pytest.mark.integration


def squat(port: int) -> socket.socket:
    """Listen on the port (and never answer), as a process that won the race would."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    return s


def test_redis_moves_to_another_port_when_its_port_was_taken(tmp_path: Path) -> None:
    ensure_provisioned("redis")
    server = RedisServer(tmp_path)
    taken = server.port
    with squat(taken):
        server.start()
        try:
            assert server.port != taken
            assert server.healthy()  # and it is our process that answers
        finally:
            server.stop()


def test_kafka_moves_to_other_ports_when_its_port_was_taken(tmp_path: Path) -> None:
    ensure_provisioned("kafka")
    server = KafkaServer(kafka_libs(), tmp_path, cds_archive=kafka_cds_archive())
    taken = server.port
    with squat(taken):
        server.start()
        try:
            assert server.port != taken
            assert server.healthy()
        finally:
            server.stop()


def test_restart_keeps_its_port_even_if_that_fails(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    port = server.port
    server.stop()
    try:
        with squat(port), pytest.raises(Exception, match="(?i)address already in use"):
            server.start(timeout=20)
        assert server.port == port  # a restart never silently moves: clients hold that address
    finally:
        server.stop()
