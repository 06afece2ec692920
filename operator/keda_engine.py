"""The KEDA engine inside a reconcile: write a ScaledObject per role with ``engine: keda``, remove the
ones no longer wanted, and keep ``status.scaling`` to the roles that are autoscaled.

KEDA (its HPA) then owns the Deployment's replicas; the reconcile keeps whatever they are
(decisions/replicas.py). A cluster without KEDA's CRDs gets a status line and a Warning Event that say
so, not a failing reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from alertpipe.operator.decisions.keda import (
    desired_scaled_object,
    desired_trigger_authentication,
    scaled_object_name,
)
from alertpipe.operator.decisions.replicas import SCALED_ROLES, autoscaled, pinned_by
from alertpipe.operator.decisions.topics import topic_names
from alertpipe.operator.decisions.workloads import Owner
from alertpipe.operator.kube import KubeError
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config import OFFSET_RESET, consumer_group

if TYPE_CHECKING:
    from alertpipe.operator.context import Context

__all__ = ["reconcile_keda"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]


async def reconcile_keda(
    rec: Context,
    body: Mapping[str, Any],
    owner: Owner,
    spec: AlertPipelineSpec,
    status: Mapping[str, Any],
    now: datetime,
) -> JSON:
    """The pipeline's ``status.scaling`` after applying (or removing) its ScaledObjects."""
    scaling: JSON = dict(status.get("scaling") or {})
    topics = topic_names(owner.namespace, owner.name, spec.kafka)
    keda_roles = []
    for role in SCALED_ROLES:
        auto = autoscaled(spec, role)
        was_keda = (scaling.get(role) or {}).get("engine") == "keda"
        if auto is None or auto.engine != "keda":
            if was_keda:
                name = scaled_object_name(owner.name, role)
                await rec.kube.delete("ScaledObject", owner.namespace, name)
                rec.applier.forget(("ScaledObject", owner.namespace, name))
                rec.event_soon(body, "Normal", "ScaledObjectRemoved", f"{role}: deleted ScaledObject {name}")
                scaling.pop(role, None)
            if auto is None:
                scaling.pop(role, None)
            continue
        keda_roles.append(role)
        group = consumer_group(owner.namespace, owner.name, role)  # type: ignore[arg-type]
        topic = topics.events if role == "evaluator" else topics.alerts
        so = desired_scaled_object(
            owner,
            role,
            spec,
            auto,
            group,
            topic,
            OFFSET_RESET,
            max(1, round(rec.settings.scale_interval)),
            paused=pinned_by(spec, role, now) is not None,
        )
        name = so["metadata"]["name"]
        try:
            auth = desired_trigger_authentication(owner, spec)
            if auth is not None:
                await rec.applier.apply(auth, body)
            await rec.applier.apply(so, body)
        except KubeError as exc:
            if exc.status != 404:
                raise
            reason = "KEDA's CRDs are not installed in this cluster: install KEDA, or use engine: operator"
            if (scaling.get(role) or {}).get("reason") != reason:
                rec.event_soon(body, "Warning", "KedaNotInstalled", f"{role}: {reason}")
            scaling[role] = {"engine": "keda", "reason": reason}
            continue
        scaling[role] = {
            "engine": "keda",
            "reason": f"KEDA ScaledObject {name} scales {role} on group {group}, topic {topic}"
            f" (lagThreshold {auto.lag_threshold}, {auto.min_replicas}..{auto.max_replicas} replicas)",
        }
    if keda_roles:
        logger.debug("%s/%s: KEDA scales %s", owner.namespace, owner.name, ", ".join(keda_roles))
    return scaling
