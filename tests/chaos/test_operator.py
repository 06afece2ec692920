# mypy: disable-error-code="index, union-attr, no-any-return"
"""The operator killed with SIGKILL in the middle of reconciling a batch of new pipelines: started
again (one replica), or taken over by the standby (two replicas, Kopf peering). Every pipeline ends
up with its config, its three Deployments and its topics, and nothing is written twice: each topic
created once (one TopicCreated Event names it), each Deployment still at generation 1."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest

from devstack.pipeline import wait_for
from tests.integration.operator.conftest import api, crds, k, operator_factory  # noqa: F401 - fixtures
from tests.integration.operator.helpers import Cluster, pipeline_body
from tests.integration.operator.test_ha import _reconciles, peering  # noqa: F401 - a fixture

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
PIPELINES = 6


def settled(c: Cluster, names: list[str]) -> bool:
    for n in names:
        sel = f"alertpipe.io/pipeline={n}"
        if c.config(n) is None or len(c.apps.list_namespaced_deployment(c.ns, label_selector=sel).items) != 3:
            return False
        if not (c.get("alertpipelines", n).get("status") or {}).get("topics"):
            return False
    return True


def written_twice(c: Cluster, names: list[str]) -> dict[str, Any]:
    created = Counter(t for msg in c.events("TopicCreated") for t in re.findall(r"created topic (\S+)", msg))
    out: dict[str, Any] = {"topics created twice": sorted(t for t, n in created.items() if n > 1)}
    deps = [d for n in names for d in c.apps.list_namespaced_deployment(
        c.ns, label_selector=f"alertpipe.io/pipeline={n}").items]
    out["deployments past generation 1"] = sorted(d.metadata.name for d in deps if d.metadata.generation != 1)
    return {key: v for key, v in out.items() if v}


@pytest.mark.parametrize("mode", ["restart", "failover"])
def test_operator_kill_9_during_a_reconcile(
    k: Cluster, operator_factory: Any, kafka_bootstrap: str, redis_url: str, mode: str,  # noqa: F811 - fixtures
    request: pytest.FixtureRequest,
) -> None:
    names = [f"p{i}" for i in range(PIPELINES)]
    if mode == "failover":
        name = request.getfixturevalue("peering")
        common = ("--peering", name, "--peering-lifetime", "5")
        active = operator_factory(*common, "--priority", "200")
        standby = operator_factory(*common, "--priority", "100")
    else:
        active = operator_factory()
    for n in names:
        k.create(pipeline_body(n, kafka_bootstrap, redis={"url": redis_url}))
    wait_for(lambda: any(k.config(n) for n in names), "the first pipeline's config", 90, every=0.05)
    t0 = time.monotonic()
    active.proc.kill()  # SIGKILL: no clean exit, its peering record stays until it expires
    active.proc.wait(10)
    done_before = sum(1 for n in names if settled(k, [n]))
    if mode == "restart":
        active.start()
    wait_for(lambda: settled(k, names), "every pipeline reconciled after the kill", 120, every=0.2)
    took = time.monotonic() - t0
    print(f"\noperator kill -9 ({mode}): {done_before}/{PIPELINES} pipelines done before the kill,"
          f" all {PIPELINES} settled {took:.1f} s after it")
    assert done_before < PIPELINES, "the kill came after the reconcile: the test proved nothing"
    if mode == "failover":
        assert _reconciles(standby.http_get(standby.metrics_port, "/metrics")[1]) > 0
    time.sleep(2)  # a late second write would land now
    assert written_twice(k, names) == {}
