"""What the reconciler lends its helpers: the settings and the parts it owns.

The rollouts, the SLO watch and the KEDA engine act on the reconciler's clients (Kubernetes,
owned-object writes, topics, Kafka admins), its caches and its queue. They see them through
``Context``, a protocol the ``Reconciler`` satisfies, so they sit below it in the operator's layers
(pyproject's import contracts) instead of importing it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from alertpipe.operator.apply import Applier
from alertpipe.operator.kube import Kube
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.operator.queue import WorkQueue
from alertpipe.operator.store import Store
from alertpipe.operator.topics import Admins, Topics

__all__ = ["Context", "OperatorSettings"]


@dataclass(frozen=True)
class OperatorSettings:
    image: str = "alertpipe:latest"
    role_images: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"  # a role's spec.<role>.imagePullPolicy wins
    image_pull_secrets: tuple[str, ...] = ()  # Secret names in each pipeline's namespace
    rule_debounce: float = 0.2  # seconds a rule change waits for more changes...
    rule_max_wait: float = 1.0  # ...but never longer than this after the first one
    resync: float = 300.0  # seconds between full resyncs
    concurrency: int = 8
    scale_interval: float = 10.0  # seconds between lag observations (our engine; KEDA's pollingInterval)
    pod_address_annotation: str | None = None  # canary analysis: pod address from this annotation
    slo_interval: float = 15.0  # seconds between SLO measurements (operator/slo.py)


class Context(Protocol):
    """The reconciler's parts its helpers use (reconciler.Reconciler)."""

    kube: Kube
    settings: OperatorSettings
    store: Store
    queue: WorkQueue
    applier: Applier
    topics: Topics
    admins: Admins

    def event_soon(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...

    def spec(self, body: Mapping[str, Any]) -> tuple[AlertPipelineSpec | None, list[tuple[str, str]]]: ...
