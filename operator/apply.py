"""Writing the pipeline's owned objects: create or update each so the live one matches the desired
one, writing nothing when it already does, noticing when one was changed by hand (drift), and
deleting the workloads of roles the spec disables.

Deployments are compared against their watched copy; the other kinds are not read again while the
same desired hash was applied within the resync period (their watch, ``owned_changed``, drops that
memory when one is changed behind the operator's back). The operator's own writes are remembered by
resourceVersion, so their watch events are never taken for drift, however late they arrive.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from alertpipe.operator.decisions.compile import CONFIG_KEY
from alertpipe.operator.decisions.workloads import DESIRED_HASH, deployment_name, drifted, needs_update
from alertpipe.operator.events import Poster
from alertpipe.operator.kube import KubeError
from alertpipe.operator.models import ROLES, AlertPipelineSpec

__all__ = ["Applier", "ObjectKey", "Writes"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)


class Writes(Protocol):
    """The apiserver calls the Applier makes (operator.kube.Kube; in-memory in unit tests)."""

    async def get(self, kind: str, namespace: str, name: str) -> JSON | None: ...
    async def create(self, obj: JSON) -> JSON: ...
    async def replace(self, obj: JSON) -> JSON: ...
    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: JSON, sub: str | None = None
    ) -> JSON: ...
    async def delete(self, kind: str, namespace: str, name: str) -> None: ...


class Applier:
    def __init__(
        self,
        kube: Writes,
        deployments: Mapping[tuple[str, str], JSON],
        pipelines: Mapping[tuple[str, str], JSON],
        events: Poster,
        resync: float,
    ) -> None:
        self._kube = kube
        self._deployments = deployments  # watched (the Store's)
        self._pipelines = pipelines
        self._events = events
        self._fresh = 0.9 * resync
        # (kind, namespace, name) -> (desired hash last applied, when)
        self._applied: dict[ObjectKey, tuple[str | None, float]] = {}
        # (kind, namespace, name) -> the owned object as last applied (non-Deployment kinds), and the
        # keys a watch event showed changed or deleted behind the operator's back
        self._owned: dict[ObjectKey, JSON] = {}
        self._suspect: set[ObjectKey] = set()
        # resourceVersions the operator's own writes produced, per owned object (the last few): a
        # watch event of one of them is never drift, however late it arrives
        self._ours: dict[ObjectKey, deque[str]] = {}

    # --- memory of what was written --------------------------------------------------------------

    def wrote(self, key: ObjectKey, response: Mapping[str, Any]) -> None:
        """Remember a write of ours (its resourceVersion), so its watch event is not drift."""
        rv = (response.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._ours.setdefault(key, deque(maxlen=8)).append(str(rv))

    def forget(self, key: ObjectKey) -> None:
        """The object is gone or rewritten elsewhere: apply it in full next time."""
        self._applied.pop(key, None)

    def disown(self, key: ObjectKey) -> None:
        """The operator deletes the object itself: its deletion is not drift."""
        self._owned.pop(key, None)

    def forget_pipeline(self, namespace: str, name: str) -> None:
        for key in [k for k in self._applied if k[1] == namespace and k[2].startswith(f"{name}-")]:
            del self._applied[key]
        for key in [k for k in self._owned if k[1] == namespace and k[2].startswith(f"{name}-")]:
            del self._owned[key]
            self._suspect.discard(key)
            self._ours.pop(key, None)

    def owned_changed(self, body: Mapping[str, Any], deleted: bool = False) -> str | None:
        """A watch event of an owned object: the name of the pipeline to reconcile now because the
        object no longer holds what was applied (edited or deleted by hand), else None."""
        meta = body.get("metadata", {})
        key = (str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        desired = self._owned.get(key)
        pipeline = (meta.get("labels") or {}).get("alertpipe.io/pipeline")
        if desired is None or not pipeline or meta.get("resourceVersion") in self._ours.get(key, ()):
            return None
        ref = (desired["metadata"].get("ownerReferences") or [{}])[0]
        stored = self._pipelines.get((key[1], pipeline))
        if stored is None or stored["metadata"].get("uid") != ref.get("uid"):
            return None  # an object of a pipeline that is gone (or an older one of the same name)
        if stored["metadata"].get("deletionTimestamp"):
            return None
        if deleted or drifted(desired, body):
            logger.info("%s %s/%s changed outside the operator; restoring", *key)
            self._applied.pop(key, None)
            self._suspect.add(key)
            return str(pipeline)
        return None

    def _restored(self, key: ObjectKey, pipeline: Mapping[str, Any] | None) -> None:
        """After a write: an Event when the write undid a change made outside the operator."""
        if key in self._suspect:
            self._suspect.discard(key)
            if pipeline is not None:
                kind, _ns, name = key
                message = f"{kind} {name} was changed or deleted outside the operator; restored"
                self._events.soon(pipeline, "Warning", "DriftCorrected", message)

    # --- writes ----------------------------------------------------------------------------------

    async def apply_config_map(self, body: Mapping[str, Any], cm: JSON, summary: str) -> None:
        """Create or update the config ConfigMap; no read while what we last wrote is what we want."""
        meta = cm["metadata"]
        key = ("ConfigMap", meta["namespace"], meta["name"])
        text = cm["data"][CONFIG_KEY]
        self._owned[key] = cm
        written = self._applied.get(key)
        if written is not None and written[0] == text and time.monotonic() - written[1] < self._fresh:
            return
        if written is not None:
            # It exists (we wrote it): one merge patch, no read, no resourceVersion needed.
            try:
                out = await self._kube.merge_patch(
                    "ConfigMap",
                    meta["namespace"],
                    meta["name"],
                    {"metadata": {"annotations": meta["annotations"]}, "data": cm["data"]},
                )
                self.wrote(key, out)
                self._applied[key] = (text, time.monotonic())
                self._events.soon(body, "Normal", "ConfigUpdated", summary)
                self._restored(key, body)
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
        live = None
        try:
            self.wrote(key, await self._kube.create(cm))
            self._events.soon(body, "Normal", "ConfigCreated", summary)
            self._restored(key, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            live = await self._kube.get("ConfigMap", meta["namespace"], meta["name"])
        if live is not None and ((live.get("data") or {}).get(CONFIG_KEY) != text or drifted(cm, live)):
            cm = {**cm, "metadata": {**meta, "resourceVersion": live["metadata"]["resourceVersion"]}}
            self.wrote(key, await self._kube.replace(cm))
            self._events.soon(body, "Normal", "ConfigUpdated", summary)
            self._restored(key, body)
        self._suspect.discard(key)
        self._applied[key] = (text, time.monotonic())

    async def apply(self, obj: JSON, pipeline: Mapping[str, Any] | None = None) -> JSON:
        """Make the live object match ``obj``; writes nothing when it already does.

        A new object is created without a read first; a 409 falls back to read-and-compare.
        """
        meta = obj["metadata"]
        kind, ns, name = obj["kind"], meta["namespace"], meta["name"]
        key = (kind, ns, name)
        want_hash = meta.get("annotations", {}).get(DESIRED_HASH)
        if kind == "Deployment":
            watched = self._deployments.get((ns, name))
            if watched is not None and not needs_update(obj, watched):
                return watched
        else:
            self._owned[key] = obj
            applied = self._applied.get(key)
            if (
                applied is not None
                and applied[0] == want_hash
                and time.monotonic() - applied[1] < self._fresh
            ):
                return {}
        live = None
        if key in self._applied or (kind == "Deployment" and (ns, name) in self._deployments):
            live = await self._kube.get(kind, ns, name)
        if live is None:
            try:
                created = await self._kube.create(obj)
                self.wrote(key, created)
                self._applied[key] = (want_hash, time.monotonic())
                self._restored(key, pipeline)
                return created
            except KubeError as exc:
                if exc.status != 409:
                    raise
                live = await self._kube.get(kind, ns, name)
                if live is None:
                    raise
        if not needs_update(obj, live):
            self._applied[key] = (want_hash, time.monotonic())
            self._suspect.discard(key)
            return live
        body = {**obj, "metadata": dict(meta)}
        live_meta = live["metadata"]
        body["metadata"]["resourceVersion"] = live_meta["resourceVersion"]
        body["metadata"]["annotations"] = {
            **(live_meta.get("annotations") or {}),
            **meta.get("annotations", {}),
        }
        body["metadata"]["labels"] = {**(live_meta.get("labels") or {}), **meta.get("labels", {})}
        if kind == "Service":
            spec = dict(body["spec"])
            for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if k in live.get("spec", {}):
                    spec[k] = live["spec"][k]
            body["spec"] = spec
        logger.info("updating %s %s/%s", kind, ns, name)
        replaced = await self._kube.replace(body)
        self.wrote(key, replaced)
        self._applied[key] = (want_hash, time.monotonic())
        self._restored(key, pipeline)
        return replaced

    async def remove_disabled(self, body: Mapping[str, Any], spec: AlertPipelineSpec) -> None:
        """Delete the Deployments of the roles the spec disables (and the ingestor's Service)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        for role in ROLES:
            if not getattr(spec, role).enabled:
                dname = deployment_name(name, role)
                if (namespace, dname) in self._deployments:  # watched, so no read per reconcile
                    await self._kube.delete("Deployment", namespace, dname)
                    await self._events.post(
                        body, "Normal", "WorkloadRemoved", f"{role} disabled: deleted Deployment {dname}"
                    )
        if not spec.ingestor.enabled and await self._kube.get(
            "Service", namespace, deployment_name(name, "ingestor")
        ):
            await self._kube.delete("Service", namespace, deployment_name(name, "ingestor"))
