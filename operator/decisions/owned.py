"""What every object a pipeline owns carries, and how the operator tells it needs a write.

The owner reference, the labels, the names, and ``alertpipe.io/desired-hash`` (a hash of what the
operator asked for): the operator writes only when that hash, or a field others may drift (replicas),
differs from the live object. Comparing hashes, not live fields, keeps apiserver defaulting and
quantity normalisation from turning every resync into a write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from alertpipe.operator.models import GROUP, VERSION

__all__ = [
    "DESIRED_HASH",
    "MANAGED_BY",
    "Owner",
    "deployment_name",
    "drifted",
    "labels",
    "object_meta",
    "needs_update",
    "with_hash",
    "worker_account_name",
]

JSON = dict[str, Any]
DESIRED_HASH = "alertpipe.io/desired-hash"
MANAGED_BY = "alertpipe-operator"


@dataclass(frozen=True)
class Owner:
    """The AlertPipeline that owns everything here (for ownerReferences)."""

    namespace: str
    name: str
    uid: str

    def reference(self) -> JSON:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AlertPipeline",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def labels(pipeline: str, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "alertpipe",
        "app.kubernetes.io/instance": pipeline,
        "app.kubernetes.io/part-of": "alertpipe",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "alertpipe.io/pipeline": pipeline,
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def deployment_name(pipeline: str, role: str) -> str:
    return f"{pipeline}-{role}"


def worker_account_name(pipeline: str) -> str:
    return f"{pipeline}-worker"


def object_meta(owner: Owner, name: str, component: str | None) -> JSON:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, component),
        "ownerReferences": [owner.reference()],
    }


def with_hash(obj: JSON) -> JSON:
    """``obj`` with the desired-hash annotation over everything else in it."""
    digest = hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    meta = dict(obj["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), DESIRED_HASH: digest}
    return {**obj, "metadata": meta}


def needs_update(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """True when ``live`` is not what the operator last asked for (hash), its replicas drifted, or
    (any kind but Deployment) a field the operator sets was changed by hand (:func:`drifted`)."""
    want = desired.get("metadata", {}).get("annotations", {}).get(DESIRED_HASH)
    have = (live.get("metadata", {}).get("annotations") or {}).get(DESIRED_HASH)
    if want != have:
        return True
    if desired.get("kind") == "Deployment":
        return bool(desired["spec"].get("replicas") != (live.get("spec") or {}).get("replicas"))
    return drifted(desired, live)


def _contains(have: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and _contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


def drifted(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """True when ``live`` lost or changed something ``desired`` sets: a field, a label, an annotation,
    the owner, a list entry (a list must keep its length: an extra Role rule is drift too). Fields
    only the apiserver adds (clusterIP, defaults, managedFields) are not. Not for Deployments, whose
    quantities the apiserver rewrites (``0.5`` → ``500m``): they are compared by hash and replicas.
    """
    dmeta, lmeta = desired.get("metadata") or {}, live.get("metadata") or {}
    for k in ("labels", "annotations", "ownerReferences"):
        if k in dmeta and not _contains(lmeta.get(k) or ({} if k != "ownerReferences" else []), dmeta[k]):
            return True
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    return not _contains(live, body)
