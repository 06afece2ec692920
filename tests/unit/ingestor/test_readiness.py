"""When failed metadata requests make the ingestor's producer unready (workers.ingestor.producer)."""

from __future__ import annotations

import pytest

from alertpipe.workers.ingestor.producer import UNREADY_AFTER_S, unreachable

pytestmark = pytest.mark.unit


def test_a_ready_producer_rides_out_a_broker_failover_but_not_a_dead_cluster() -> None:
    assert not unreachable(2.0, was_ready=True)  # one broker of three killed: fenced after 9 s
    assert not unreachable(9.5, was_ready=True)
    assert unreachable(UNREADY_AFTER_S, was_ready=True)
    assert unreachable(0.0, was_ready=False)  # never reached the cluster: not ready from the start
    assert UNREADY_AFTER_S > 9.0  # above Kafka's broker.session.timeout.ms default
