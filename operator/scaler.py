"""The operator's scaling engine: observe each autoscaled role's lag, decide, apply, report.

One ``tick`` per pipeline per interval (a Kopf timer calls it): one offsets read per consumer group,
the pure decision (decisions/scaling.py), a merge patch of the owned Deployment's ``spec.replicas``
when it changes (never the AlertPipeline's spec), ``status.scaling`` plus the Scaling conditions,
and an Event per change with the numbers. Everything the next decision needs lives in status, so a
restarted operator goes on where the last one stopped. Status is written at once when replicas or a
condition change, otherwise every PERSIST_TICKS intervals (the decisions in between run on
the same memory, kept here): a status patch per pipeline per tick would be most of the apiserver
writes of an idle cluster. A restart loses at most that much recommendation history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from alertpipe.operator.autoscaling import RoleScalingStatus
from alertpipe.operator.decisions.conditions import merge_conditions
from alertpipe.operator.decisions.lag import GroupOffsets, summarize
from alertpipe.operator.decisions.patch import merge_patch
from alertpipe.operator.decisions.replicas import autoscaled, operator_scaled, pinned_by
from alertpipe.operator.decisions.scaling import (
    SCALING_CONDITIONS,
    ScalingDecision,
    ScalingInput,
    decide,
    scaling_conditions,
)
from alertpipe.operator.decisions.topics import topic_names
from alertpipe.operator.decisions.tracks import candidate_deployment_name
from alertpipe.operator.decisions.workloads import deployment_name
from alertpipe.operator.kafka_admin import KafkaAdminError
from alertpipe.operator.kube import KubeError
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.operator.reconciler import Reconciler
from alertpipe.workers.config import OFFSET_RESET, consumer_group

__all__ = ["Scaler", "consumed_topic"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
PERSIST_TICKS = 3  # intervals between status writes while nothing visible changes (30 s at 10 s)


def _candidate_replicas(rec: Reconciler, namespace: str, name: str, role: str) -> int:
    """Replicas of the evaluator's canary track (one budget: maxReplicas counts both tracks)."""
    if role != "evaluator":
        return 0
    dep = rec.store.deployments.get((namespace, candidate_deployment_name(name))) or {}
    return int((dep.get("spec") or {}).get("replicas") or 0)


def consumed_topic(namespace: str, name: str, spec: AlertPipelineSpec, role: str) -> str:
    """The topic whose lag scales ``role``: events for the evaluator, alerts for the deliverer."""
    topics = topic_names(namespace, name, spec.kafka)
    return topics.events if role == "evaluator" else topics.alerts


class Scaler:
    def __init__(self, rec: Reconciler) -> None:
        self.rec = rec
        # (namespace, name, uid) -> role -> the last decision's status, and when status was written
        self._memory: dict[tuple[str, str, str], dict[str, RoleScalingStatus]] = {}
        self._persisted: dict[tuple[str, str, str], float] = {}

    async def _observe(
        self, namespace: str, spec: AlertPipelineSpec, groups: Mapping[str, tuple[str, str]]
    ) -> dict[str, GroupOffsets | str]:
        """Offsets per role, or the one-line reason they could not be read."""
        rec = self.rec
        loop = asyncio.get_running_loop()
        try:
            options = await rec.topics.kafka_options(namespace, spec)
            admin = await loop.run_in_executor(
                rec.topics.pool,
                rec.admins.get,
                spec.kafka.bootstrap_servers,
                options,
            )
        except KafkaAdminError as exc:
            return {role: str(exc) for role in groups}
        out: dict[str, GroupOffsets | str] = {}

        async def one(role: str, group: str, topic: str) -> None:
            try:
                pool = rec.topics.pool
                out[role] = await loop.run_in_executor(pool, admin.group_offsets, group, topic)
            except KafkaAdminError as exc:
                out[role] = str(exc)

        await asyncio.gather(*(one(r, g, t) for r, (g, t) in groups.items()))
        return out

    async def tick(self, namespace: str, name: str) -> dict[str, ScalingDecision]:
        """Observe, decide and apply for every role the operator scales in this pipeline."""
        rec = self.rec
        body = rec.store.pipelines.get((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            for k in [k for k in self._memory if k[:2] == (namespace, name)]:
                self._memory.pop(k, None)
                self._persisted.pop(k, None)
            return {}
        key = (namespace, name, str(body["metadata"].get("uid")))
        spec, _errors = rec.spec(body)
        if spec is None:
            return {}
        roles = [
            r for r in operator_scaled(spec) if (namespace, deployment_name(name, r)) in rec.store.deployments
        ]
        if not roles:
            return {}
        groups = {
            r: (consumer_group(namespace, name, r), consumed_topic(namespace, name, spec, r))  # type: ignore[arg-type]
            for r in roles
        }
        seen = await self._observe(namespace, spec, groups)
        now = datetime.now(UTC)
        status = dict(body.get("status") or {})
        previous = status.get("scaling") or {}
        memory = self._memory.get(key, {})
        decisions: dict[str, ScalingDecision] = {}
        for role in roles:
            auto = autoscaled(spec, role)
            assert auto is not None  # noqa: S101 - operator_scaled returned it
            dep = rec.store.deployments[(namespace, deployment_name(name, role))]
            got = seen.get(role)
            # memory only while status still holds the role (an engine switch or autoscaling off drops it)
            shown = previous.get(role)
            prev = (memory.get(role) or RoleScalingStatus.model_validate(shown)) if shown else None
            decisions[role] = decide(
                ScalingInput(
                    role=role,
                    spec=auto,
                    lag=summarize(got, OFFSET_RESET) if isinstance(got, GroupOffsets) else None,
                    now=time.time(),
                    current_replicas=int((dep.get("spec") or {}).get("replicas") or 0),
                    available_replicas=int((dep.get("status") or {}).get("availableReplicas") or 0),
                    previous=prev,
                    other_tracks_replicas=_candidate_replicas(rec, namespace, name, role),
                    pinned_by=pinned_by(spec, role, now),
                    unknown_reason=got if isinstance(got, str) else "lag not observed",
                )
            )
        try:
            for role, d in decisions.items():
                if d.changed:
                    await self._scale(body, role, d)
        except KubeError as exc:
            # status stays as it was: the next tick decides again from the same memory
            logger.warning("%s/%s: could not scale: %s", namespace, name, exc)
            return decisions
        self._memory[key] = {r: d.status for r, d in decisions.items()}
        shown = {(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []}
        due = (
            any(d.changed for d in decisions.values())
            or any(r not in previous for r in decisions)
            or any((w.type, w.status, w.reason) not in shown for w in scaling_conditions(decisions))
            or time.monotonic() - self._persisted.get(key, 0.0)
            >= PERSIST_TICKS * rec.settings.scale_interval - 0.5
        )
        if due and await self._write_status(body, status, decisions, now):
            self._persisted[key] = time.monotonic()
        return decisions

    async def _scale(self, body: Mapping[str, Any], role: str, d: ScalingDecision) -> None:
        meta = body["metadata"]
        dname = deployment_name(meta["name"], role)
        patched = await self.rec.kube.merge_patch(
            "Deployment", meta["namespace"], dname, {"spec": {"replicas": d.replicas}}
        )
        # the reconcile reads replicas from the watched copy: keep it current
        self.rec.store.deployments[(meta["namespace"], dname)] = patched
        logger.info("%s/%s: %s %s", meta["namespace"], meta["name"], role, d.message)
        await self.rec.event(body, "Normal", d.reason, f"{role}: {d.message}")

    async def _write_status(
        self, body: Mapping[str, Any], status: JSON, decisions: Mapping[str, ScalingDecision], now: datetime
    ) -> bool:
        """Write ``status.scaling`` and the conditions; False when the write failed."""
        meta = body["metadata"]
        conditions = list(status.get("conditions") or [])
        mine = [c for c in conditions if c.get("type") in SCALING_CONDITIONS]
        others = [c for c in conditions if c.get("type") not in SCALING_CONDITIONS]
        merged = merge_conditions(mine, scaling_conditions(decisions), now, meta.get("generation"))
        scaling = dict(status.get("scaling") or {})
        for role, d in decisions.items():
            scaling[role] = d.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        new_status = {**status, "scaling": scaling, "conditions": others + merged}
        before = {c.get("type"): c.get("status") for c in mine}
        for c in merged:
            if c["type"] in ("HotPartition", "PartitionCapReached") and c["status"] == "True":
                if before.get(c["type"]) != "True":
                    self.rec.event_soon(body, "Warning", c["type"], c["message"])
        patch = merge_patch(status, new_status)
        if not patch:
            return True
        try:
            patched = await self.rec.kube.merge_patch(
                "AlertPipeline", meta["namespace"], meta["name"], {"status": patch}, sub="status"
            )
        except KubeError as exc:
            logger.warning("%s/%s: could not write scaling status: %s", meta["namespace"], meta["name"], exc)
            return False
        stored = self.rec.store.pipelines.get((meta["namespace"], meta["name"]))
        if stored is not None and stored["metadata"].get("uid") == (patched.get("metadata") or {}).get("uid"):
            stored["status"] = patched.get("status", new_status)
        return True
