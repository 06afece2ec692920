"""The local pod runner's pure parts: which pods to run, and a container's command line and
environment with its volumes' mount paths rewritten to local folders (devstack.podrunner runs them)."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "Json", "Lookup", "container_argv", "container_env", "expand_vars", "field_ref", "local_ip",
    "mount_parents", "pods_to_run", "rewrite_paths",
]

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
Json = dict[str, Any]
Lookup = Callable[[str, str, str], Mapping[str, str] | None]  # (kind, namespace, name) -> data


# -- pure parts ------------------------------------------------------------------------------
def pods_to_run(pods: list[Json], label_selector: Mapping[str, str] | None = None) -> dict[str, Json]:
    """Pods (by uid) that should have running processes: not terminating, not finished."""
    out = {}
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        labels = meta.get("labels") or {}
        if label_selector and any(labels.get(k) != v for k, v in label_selector.items()):
            continue
        out[meta["uid"]] = pod
    return out


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept, $$ escapes a $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def rewrite_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """Replace a mountPath prefix (longest first) by its local folder."""
    for mount in sorted(mounts, key=len, reverse=True):
        if text == mount or text.startswith(mount.rstrip("/") + "/"):
            return str(mounts[mount]) + text[len(mount.rstrip("/")) :]
        text = re.sub(rf"(?<![\w/]){re.escape(mount.rstrip('/'))}(?=/|\b|$)", str(mounts[mount]), text)
    return text


def container_argv(container: Json, env: Mapping[str, str], mounts: Mapping[str, Path]) -> list[str] | None:
    """The local argv of a container, or None when it names no command (image entrypoints are unknown,
    except ours: ``alertpipe``, so args alone mean ``alertpipe <args>``). ``alertpipe`` and
    ``python``/``python3`` resolve to this checkout's environment."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command and not args:
        return None
    argv = [rewrite_paths(expand_vars(a, env), mounts) for a in (command or ["alertpipe"]) + args]
    exe_dir = Path(sys.executable).parent
    if argv[0] == "alertpipe":
        argv[0] = str(exe_dir / "alertpipe")
    elif argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def local_ip(uid: str) -> str:
    """The loopback address a pod's processes bind (stable per pod uid, inside 127.64.0.0/10)."""
    n = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:3], "big")
    return f"127.{64 + (n >> 16) % 64}.{(n >> 8) & 0xFF}.{1 + (n & 0xFF) % 254}"


def field_ref(pod: Json, path: str) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
        "status.podIP": local_ip(meta.get("uid", "")),
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    return ""


def mount_parents(mounts: Mapping[str, Path], root: Path) -> dict[str, Path]:
    """The folders that hold mounts (``--secrets-dir /var/run/secrets/alertpipe`` above
    ``/var/run/secrets/alertpipe/<secret>``), laid out under ``root`` with a link per mount."""
    out: dict[str, Path] = {}
    for mount, local in mounts.items():
        parent = str(PurePosixPath(mount).parent)
        if parent in ("/", ".") or parent in mounts:
            continue
        link = root / mount.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(local, target_is_directory=True)
        out[parent] = root / parent.lstrip("/")
    return out


def container_env(pod: Json, container: Json, lookup: Lookup, mounts: Mapping[str, Path]) -> dict[str, str]:
    """The container's environment as Kubernetes would build it (envFrom first, then env in order)."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in src:
                data = lookup(kind, ns, src[key]["name"])
                if data is None and not src[key].get("optional"):
                    raise LookupError(f"{kind} {ns}/{src[key]['name']} not found (envFrom)")
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = rewrite_paths(expand_vars(str(var["value"]), env), mounts)
            continue
        vf = var.get("valueFrom") or {}
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
            continue
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in vf:
                ref = vf[key]
                data = lookup(kind, ns, ref["name"])
                if data is not None and ref["key"] in data:
                    env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise LookupError(f"env {name}: {kind} {ns}/{ref['name']} has no key {ref['key']!r}")
                break  # an optional reference that is missing leaves the variable unset
        else:
            env[name] = ""  # neither value nor a known valueFrom: set but empty
    return env


