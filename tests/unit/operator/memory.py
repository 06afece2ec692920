"""In-memory collaborators of the Reconciler (an apiserver, Kafka admin clients, a Redis check):
resourceVersions, 404/409 and status subresources as the apiserver has them, topics and partitions
as Kafka has them, so unit tests drive the reconcile without a cluster."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from alertpipe.operator.decisions.connectivity import Failure
from alertpipe.operator.decisions.topics import TopicPlan, TopicSeen
from alertpipe.operator.kafka_admin import KafkaAdminError
from alertpipe.operator.kube import KubeError
from alertpipe.operator.models import RedisSpec

JSON = dict[str, Any]


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class MemoryKube:
    """Objects by (kind, namespace, name); every write is recorded as (verb, kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.writes: list[tuple[str, str, str]] = []
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)

    def events(self, reason: str | None = None) -> list[JSON]:
        out = [o for (k, _, _), o in self.objects.items() if k == "Event"]
        return [e for e in out if reason is None or e["reason"] == reason]

    def _stamp(self, obj: JSON) -> JSON:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        return obj

    async def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        o = self.objects.get((kind, namespace, name))
        return copy.deepcopy(o) if o is not None else None

    async def create(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        name = meta.get("name") or f"{meta['generateName']}{next(self._uid)}"
        key = (obj["kind"], meta["namespace"], name)
        if key in self.objects:
            raise KubeError(409, "AlreadyExists")
        stored = self._stamp({**obj, "metadata": {**meta, "name": name}})
        self.objects[key] = stored
        self.writes.append(("create", obj["kind"], name))
        return copy.deepcopy(stored)

    async def replace(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        live = self.objects.get(key)
        if live is None:
            raise KubeError(404, "NotFound")
        if meta.get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict")
        stored = self._stamp({**obj, "metadata": {**meta, "uid": live["metadata"]["uid"]}})
        self.objects[key] = stored
        self.writes.append(("replace", obj["kind"], meta["name"]))
        return copy.deepcopy(stored)

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: JSON, sub: str | None = None
    ) -> JSON:
        key = (kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise KubeError(404, "NotFound")
        if sub == "status":
            patch = {"status": patch.get("status")}
        stored = self._stamp(_merge(live, patch))
        self.objects[key] = stored
        self.writes.append(("patch" if sub is None else f"patch-{sub}", kind, name))
        return copy.deepcopy(stored)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        if self.objects.pop((kind, namespace, name), None) is not None:
            self.writes.append(("delete", kind, name))

    async def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[JSON]:
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items() if k == kind and ns == namespace]


class MemoryAdmin:
    """One Kafka cluster's topics (name -> partitions); ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.topics: dict[str, int] = {}
        self.down = False

    def observe(self, names: list[str]) -> dict[str, TopicSeen]:
        if self.down:
            raise KafkaAdminError("cannot reach Kafka at memory:9092: connection refused", "KafkaUnreachable")
        return {n: TopicSeen(n, self.topics[n]) for n in names if n in self.topics}

    def apply(self, plan: TopicPlan) -> list[str]:
        done = []
        for w in plan.create:
            self.topics[w.name] = w.partitions
            done.append(f"created topic {w.name}")
        for name, have, want in plan.grow:
            self.topics[name] = want
            done.append(f"grew topic {name} from {have} to {want} partitions")
        return done


class MemoryAdmins:
    def __init__(self) -> None:
        self.admin = MemoryAdmin()

    def get(self, bootstrap: str, options: Mapping[str, str]) -> MemoryAdmin:
        return self.admin


class MemoryRedisCheck:
    """Redis answers unless ``failure`` is set."""

    def __init__(self) -> None:
        self.failure: Failure | None = None
        self.checked: list[tuple[str, str]] = []

    async def check(self, namespace: str, name: str, spec: RedisSpec) -> Failure | None:
        self.checked.append((namespace, name))
        return self.failure

    def forget(self, namespace: str, name: str) -> None:
        return None
