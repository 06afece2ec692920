"""The local pod runner: pods bound to the designated kwok node run as local processes.

kwok pods run nothing. For the demo and end-to-end tests, this runner polls the pods bound to one
node (``devstack-local`` by default; optionally only those matching a label selector) and runs each
container's command on this machine, with the pod's environment (literal values, ConfigMap/Secret
references and ``envFrom`` resolved through the API, downward-API fields) and its configMap, secret,
projected and emptyDir volumes materialised under the run directory. A volume's ``mountPath`` is
rewritten to that local folder wherever it appears in the command, args, env values and workingDir.
The process stops (SIGTERM, then SIGKILL after the pod's grace period) when the pod is deleted or
terminating, and is restarted with back-off under ``restartPolicy: Always``.

Polling (every ``interval`` seconds, a field-selected list of one node's pods on loopback) instead
of a watch: nothing to resume after a dropped stream, and a second of latency is fine for a harness.
Each pod gets its own loopback address (``local_ip(uid)``, in 127.64.0.0/10): ``status.podIP``
resolves to it and ``ALERTPIPE_BIND_HOST`` carries it, so alertpipe roles bind there instead of the
wildcard and replicas listening on one fixed port do not clash. ``KUBECONFIG`` points at the
devstack's kubeconfig (there is no in-cluster service-account mount). It is a test harness, not
part of the product.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.kube import LOCAL_NODE, kube_client
from devstack.podspec import (
    Json,
    container_argv,
    container_env,
    field_ref,
    local_ip,
    mount_parents,
    pods_to_run,
    rewrite_paths,
)
from devstack.processes import ManagedProcess, StartError

__all__ = ["PodRunner", "local_ip"]  # the pure parts (a pod's argv, env, volumes' paths): devstack.podspec

logger = logging.getLogger(__name__)
RUNNER_ANNOTATION = "devstack.alertpipe.io/pod-runner"
ADDRESS_ANNOTATION = "devstack.alertpipe.io/address"  # the pod's loopback address (operator: scraping)


# -- the runner ------------------------------------------------------------------------------
@dataclass
class _LocalPod:
    uid: str
    name: str
    dir: Path
    restart_policy: str
    grace: float
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    next_start: dict[str, float] = field(default_factory=dict)


class PodRunner:
    """Runs the pods of one node as local processes until ``stop()``; ``start()`` runs it in a thread."""

    def __init__(
        self,
        kubeconfig: Path,
        run_dir: Path,
        *,
        node: str = LOCAL_NODE,
        label_selector: Mapping[str, str] | None = None,
        interval: float = 0.5,
        tie_to_parent: bool = True,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.dir = run_dir
        self.node = node
        self.label_selector = dict(label_selector or {})
        self.interval = interval
        self.tie_to_parent = tie_to_parent
        self.pods: dict[str, _LocalPod] = {}
        self.skipped: dict[str, str] = {}  # uid -> why it is not run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api: Any = None

    # -- API access (raw JSON: the pod spec is read as Kubernetes writes it) ---------------------
    def _core(self) -> Any:
        from kubernetes import client

        if self._api is None:
            self._api = kube_client(self.kubeconfig)
        return client.CoreV1Api(self._api)

    def _list_pods(self) -> list[Json]:
        resp = self._core().list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", _preload_content=False, _request_timeout=10
        )
        items: list[Json] = json.loads(resp.data)["items"]
        return items

    def _lookup(self, kind: str, ns: str, name: str) -> dict[str, str] | None:
        from kubernetes.client import ApiException

        core = self._core()
        try:
            if kind == "ConfigMap":
                raw = json.loads(core.read_namespaced_config_map(name, ns, _preload_content=False).data)
                return dict(raw.get("data") or {})
            raw = json.loads(core.read_namespaced_secret(name, ns, _preload_content=False).data)
            return {k: base64.b64decode(v).decode() for k, v in (raw.get("data") or {}).items()}
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    # -- materialising ---------------------------------------------------------------------------
    def _volumes(self, pod: Json, pod_dir: Path) -> dict[str, Path]:
        """Write the pod's volumes under pod_dir/volumes; return {volume name: local folder}."""
        ns = pod["metadata"]["namespace"]
        out: dict[str, Path] = {}
        for vol in pod.get("spec", {}).get("volumes") or []:
            d = pod_dir / "volumes" / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            sources: list[tuple[str, Json]] = []
            if "configMap" in vol:
                sources.append(("ConfigMap", vol["configMap"]))
            if "secret" in vol:
                sources.append(("Secret", {**vol["secret"], "name": vol["secret"].get("secretName")}))
            for proj in (vol.get("projected") or {}).get("sources") or []:
                if "configMap" in proj:
                    sources.append(("ConfigMap", proj["configMap"]))
                if "secret" in proj:
                    sources.append(("Secret", proj["secret"]))
                if "downwardAPI" in proj:
                    for item in proj["downwardAPI"].get("items") or []:
                        if "fieldRef" in item:
                            (d / item["path"]).write_text(field_ref(pod, item["fieldRef"]["fieldPath"]))
            for kind, src in sources:
                data = self._lookup(kind, ns, src["name"])
                if data is None:
                    if src.get("optional"):
                        continue
                    raise LookupError(f"volume {vol['name']}: {kind} {ns}/{src['name']} not found")
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] in data:
                        target = d / item["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(data[item["key"]])
                        if kind == "Secret":
                            target.chmod(0o600)
            out[vol["name"]] = d
        return out

    def _start_pod(self, pod: Json) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        name = f"{meta['namespace']}/{meta['name']}"
        pod_dir = self.dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        volumes = self._volumes(pod, pod_dir)
        local = _LocalPod(
            uid=meta["uid"],
            name=name,
            dir=pod_dir,
            restart_policy=spec.get("restartPolicy", "Always"),
            grace=min(float(spec.get("terminationGracePeriodSeconds", 30)), 30.0),
        )
        base_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
        base_env["KUBECONFIG"] = str(self.kubeconfig)
        base_env["ALERTPIPE_BIND_HOST"] = local_ip(meta["uid"])
        for c in spec.get("containers") or []:
            mounts = {
                m["mountPath"]: volumes[m["name"]]
                for m in c.get("volumeMounts") or []
                if m["name"] in volumes
            }
            mounts.update(mount_parents(mounts, pod_dir / "root" / c["name"]))
            env = container_env(pod, c, self._lookup, mounts)
            argv = container_argv(c, env, mounts)
            if argv is None:
                self.skipped[meta["uid"]] = f"{name}: container {c['name']} has no command"
                logger.warning("pod runner: %s", self.skipped[meta["uid"]])
                continue
            workdir = Path(rewrite_paths(c["workingDir"], mounts)) if c.get("workingDir") else pod_dir
            workdir.mkdir(parents=True, exist_ok=True)
            proc = ManagedProcess(
                f"{name}/{c['name']}",
                argv,
                pod_dir / f"{c['name']}.log",
                env={**base_env, **env},
                cwd=workdir,
                tie_to_parent=self.tie_to_parent,
                stop_timeout=local.grace,
                inherit_env=False,  # the pod's env (plus PATH, HOME, KUBECONFIG), not this process's
            )
            local.procs[c["name"]] = proc
        self.pods[local.uid] = local
        self._annotate_address(meta)
        for proc in local.procs.values():
            try:
                proc.start()
            except StartError as e:  # e.g. the command does not exist here: not retried
                self.skipped[local.uid] = str(e)
                logger.warning("pod runner: %s", e)
                self._stop_pod(local.uid)
                return
            logger.info("pod runner: started %s (pid %s): %s", proc.name, proc.pid, " ".join(proc.argv))

    def _annotate_address(self, meta: Json) -> None:
        """Write the pod's loopback address where the operator (--pod-address-annotation) finds it."""
        from kubernetes.client import ApiException

        patch = {"metadata": {"annotations": {ADDRESS_ANNOTATION: local_ip(meta["uid"])}}}
        try:
            self._core().patch_namespaced_pod(meta["name"], meta["namespace"], patch, _request_timeout=10)
        except ApiException as e:  # the pod went meanwhile: nothing to annotate
            logger.info("pod runner: could not annotate %s: %s", meta["name"], e.status)

    def _stop_pod(self, uid: str) -> None:
        local = self.pods.pop(uid)
        for proc in local.procs.values():
            proc.signal(15)
        for proc in local.procs.values():
            proc.stop()
            logger.info("pod runner: stopped %s", proc.name)

    def _restart_exited(self) -> None:
        now = time.monotonic()
        for local in self.pods.values():
            for cname, proc in local.procs.items():
                code = proc.exit_code()
                if proc.running() or code is None:
                    continue
                if local.restart_policy == "Never" or (local.restart_policy == "OnFailure" and code == 0):
                    continue
                if cname not in local.next_start:
                    n = local.restarts.get(cname, 0)
                    local.next_start[cname] = now + min(2.0**n, 30.0)  # back-off like the kubelet's
                    logger.info("pod runner: %s exited %s; restarting (#%d)", proc.name, code, n + 1)
                elif now >= local.next_start[cname]:
                    del local.next_start[cname]
                    local.restarts[cname] = local.restarts.get(cname, 0) + 1
                    proc.start()

    def reconcile_once(self) -> None:
        desired = pods_to_run(self._list_pods(), self.label_selector)
        for uid in set(self.pods) - set(desired):
            self._stop_pod(uid)
        for uid in set(desired) - set(self.pods) - set(self.skipped):
            try:
                self._start_pod(desired[uid])
            except LookupError as e:  # a ConfigMap/Secret not there yet: retried next round
                logger.warning("pod runner: %s: %s", desired[uid]["metadata"]["name"], e)
                if uid in self.pods:
                    self._stop_pod(uid)
        for uid in set(self.skipped) - set(desired):
            del self.skipped[uid]
        self._restart_exited()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile_once()
            except Exception:  # the apiserver restarting, a transient error: keep going
                logger.exception("pod runner: reconcile failed; retrying")
            self._stop.wait(self.interval)
        for uid in list(self.pods):
            self._stop_pod(uid)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self.run, name="devstack-pod-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._api is not None:
            self._api.close()
            self._api = None

    def local_pids(self) -> dict[str, int]:
        """{"namespace/pod/container": pid} of the processes running now."""
        return {
            p.name: p.pid
            for lp in list(self.pods.values())
            for p in lp.procs.values()
            if p.running() and p.pid
        }
