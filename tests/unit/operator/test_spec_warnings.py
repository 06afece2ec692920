"""Valid but risky specs: an idleTimeout shorter than a Kafka failover warns with the field path."""

from __future__ import annotations

import pytest

from alertpipe.operator.decisions.warnings import spec_warnings
from alertpipe.operator.models import AlertPipelineSpec

pytestmark = pytest.mark.unit

BASE = {"kafka": {"bootstrapServers": "k:9092"}, "redis": {"url": "redis://r:6379/0"}}


@pytest.mark.parametrize("idle", ["4s", "14s", "500ms"])
def test_an_idle_timeout_shorter_than_a_failover_warns(idle: str) -> None:
    (warning,) = spec_warnings(AlertPipelineSpec.model_validate({**BASE, "idleTimeout": idle}))
    assert warning.startswith(f"spec.idleTimeout: {idle} is shorter than a Kafka leader failover")
    assert "at least 30s" in warning


@pytest.mark.parametrize("idle", [None, "15s", "2m"])
def test_the_default_and_longer_idle_timeouts_do_not_warn(idle: str | None) -> None:
    spec = {**BASE, **({"idleTimeout": idle} if idle else {})}
    assert spec_warnings(AlertPipelineSpec.model_validate(spec)) == []
