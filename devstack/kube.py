"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok as the kubelet of a few fake nodes (run as envtest runs the apiserver).

Authentication: a static token file grants the user ``admin`` the group ``system:masters``; the
apiserver generates its own serving certificate in ``--cert-dir`` and that file is the clients' CA.
Service-account tokens are signed with a key pair generated here (openssl). Node, pod and Service
IPs are fake private addresses: nothing may ever connect to them.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import shutil
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devstack.kube_api import (
    FAKE_NODE_ANNOTATION,
    LOCAL_NODE,
    LOCAL_NODE_LABEL,
    fake_node,
    kube_client,
    kubeconfig_yaml,
    wait_nodes_ready,
)
from devstack.paths import bin_dir
from devstack.processes import ManagedProcess, StartError, free_port

__all__ = [  # the client side (kubeconfig, node objects, an ApiClient) is devstack.kube_api's, re-exported
    "FAKE_NODE_ANNOTATION",
    "LOCAL_NODE",
    "LOCAL_NODE_LABEL",
    "KubeCluster",
    "fake_node",
    "kube_client",
    "kubeconfig_yaml",
    "wait_nodes_ready",
]

logger = logging.getLogger(__name__)

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
NODE_LEASE_SECONDS = 40  # kwok renews each fake node's Lease every quarter of this


def _https_get(port: int, path: str, ca: Path | None, token: str | None = None, timeout: float = 3.0) -> int:
    if ca is not None:
        ctx = ssl.create_default_context(cafile=str(ca))
    else:  # the controller manager's and scheduler's own self-signed health endpoints
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _http_get_json(port: int, path: str, timeout: float = 3.0) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


class KubeCluster:
    """etcd + apiserver + controller-manager + scheduler + kwok in ``run_dir``; ``start()`` brings all up."""

    def __init__(
        self,
        run_dir: Path,
        stages: Path,
        *,
        nodes: int = 2,
        tie_to_parent: bool = True,
    ) -> None:
        self.dir = run_dir
        self.stages = stages
        self.nodes = nodes
        self.tie_to_parent = tie_to_parent
        self._pick_ports()
        self.token = secrets.token_hex(16)
        self.processes: dict[str, ManagedProcess] = {}
        self.timings: dict[str, float] = {}

    def _pick_ports(self) -> None:
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = free_port()
        self.kcm_port = free_port()
        self.scheduler_port = free_port()
        self.kwok_port = free_port()

    # -- paths -------------------------------------------------------------------------------
    @property
    def cert_dir(self) -> Path:
        return self.dir / "certs"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def _bin(self, name: str) -> str:
        path = bin_dir() / name
        if not path.exists():
            raise StartError(f"{name}: not built ({path}); run `alertpipe devstack provision`")
        return str(path)

    def _proc(self, name: str, argv: list[str]) -> ManagedProcess:
        p = ManagedProcess(name, argv, self.dir / f"{name}.log", tie_to_parent=self.tie_to_parent)
        self.processes[name] = p
        return p

    # -- setup -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        (self.dir / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        (self.dir / "tokens.csv").chmod(0o600)
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        if not pub.exists():
            for cmd in (
                ["openssl", "genrsa", "-out", str(key), "2048"],
                ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
            ):
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise StartError(
                        f"service-account key pair: {' '.join(cmd[:2])} failed: {out.stderr.strip()}"
                    )
        self.kubeconfig.write_text(kubeconfig_yaml(self.server, self.ca_file, self.token))
        self.kubeconfig.chmod(0o600)

    def _timed_start(self, name: str, p: ManagedProcess, ready: Any, what: str, timeout: float) -> None:
        t0 = time.monotonic()
        p.start()
        p.wait_healthy(ready, what, timeout)
        self.timings[name] = round(time.monotonic() - t0, 2)

    def start_etcd(self) -> None:
        p = self._proc(
            "etcd",
            [
                self._bin("etcd"),
                "--name", "devstack",
                "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"devstack=http://127.0.0.1:{self.etcd_peer_port}",
                "--listen-metrics-urls", "",
                "--unsafe-no-fsync",  # throwaway data: skip fsync, as envtest setups often do
                "--log-level", "warn",
            ],
        )  # fmt: skip
        self._timed_start(
            "etcd",
            p,
            self._etcd_ours_and_healthy,
            f"GET http://127.0.0.1:{self.etcd_port}/health",
            60,
        )

    def _etcd_ours_and_healthy(self) -> bool:
        """Healthy, and ours: its member list names our peer port (not another etcd on that port)."""
        if _http_get_json(self.etcd_port, "/health").get("health") != "true":
            return False
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=3)
        try:
            conn.request("POST", "/v3/cluster/member/list", body="{}")
            members = json.loads(conn.getresponse().read()).get("members", [])
        finally:
            conn.close()
        ours = f"http://127.0.0.1:{self.etcd_peer_port}"
        if not any(ours in m.get("peerURLs", []) for m in members):
            raise StartError(f"etcd on port {self.etcd_port} is not ours (members {members})")
        return True

    def start_apiserver(self) -> None:
        p = self._proc(
            "kube-apiserver",
            [
                self._bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={self.cert_dir}",
                f"--secure-port={self.apiserver_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                "--allow-privileged=true",
                # the `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints reject
                # (loopback) every 10 s; nothing may connect to Service IPs here anyway
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._timed_start(
            "kube-apiserver",
            p,
            lambda: (
                self.ca_file.exists()
                and _https_get(self.apiserver_port, "/readyz", self.ca_file, self.token) == 200
            ),
            f"GET {self.server}/readyz",
            120,
        )

    def _controller_manager(self) -> ManagedProcess:
        kc = str(self.kubeconfig)
        return self._proc(
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.dir / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                f"--cert-dir={self.dir / 'kcm-certs'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--profiling=false",
            ],
        )

    def _scheduler(self) -> ManagedProcess:
        kc = str(self.kubeconfig)
        return self._proc(
            "kube-scheduler",
            [
                self._bin("kube-scheduler"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.dir / 'scheduler-certs'}",
                "--profiling=false",
            ],
        )

    def _kwok(self) -> ManagedProcess:
        return self._proc(
            "kwok",
            [
                self._bin("kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION[0]}={FAKE_NODE_ANNOTATION[1]}",
                f"--server-address=127.0.0.1:{self.kwok_port}",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.240.0.1",
                # Leases keep the nodes Ready: the heartbeat stage writes the Node status only every
                # ~10 min, and without a lease the node lifecycle controller marks every node
                # NotReady after its 50 s grace (unreachable taints; new pods unschedulable for up
                # to the scheduler's 5 min backoff). The default applies only with a KwokConfiguration.
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            ],
        )

    def start(self) -> None:
        """etcd, then the apiserver, then the controllers, scheduler and kwok together, then the nodes.

        A port picked free may be taken by another process before ours binds it: then every port is
        picked again and the control plane started afresh (twice at most)."""
        for attempt in range(3):
            try:
                self._start_once()
                return
            except StartError as e:
                if attempt == 2 or "address already in use" not in str(e).lower():
                    raise
                logger.warning("control plane: a port was taken meanwhile; starting again on new ports")
                self.stop()
                self.processes.clear()
                shutil.rmtree(self.dir / "etcd", ignore_errors=True)
                self._pick_ports()

    def _start_once(self) -> None:
        self._prepare()
        self.start_etcd()
        self.start_apiserver()
        jobs = [
            ("kube-controller-manager", self._controller_manager(), self.kcm_port),
            ("kube-scheduler", self._scheduler(), self.scheduler_port),
        ]
        kwok = self._kwok()

        def bring_up(name: str, p: ManagedProcess, port: int) -> None:
            self._timed_start(name, p, lambda: _https_get(port, "/healthz", None) == 200, "GET /healthz", 90)

        with ThreadPoolExecutor(max_workers=3) as pool:
            futs = [pool.submit(bring_up, *j) for j in jobs]
            futs.append(pool.submit(self._start_kwok_and_nodes, kwok))
            errors = [f.exception() for f in futs]
        real = [e for e in errors if e is not None]
        if real:
            raise StartError("; ".join(str(e) for e in real))

    def _start_kwok_and_nodes(self, kwok: ManagedProcess) -> None:
        t0 = time.monotonic()
        kwok.start()
        api = self.core_api()
        names = [f"kwok-node-{i}" for i in range(max(self.nodes - 1, 0))] + [LOCAL_NODE]
        for name in names:
            labels = {LOCAL_NODE_LABEL[0]: LOCAL_NODE_LABEL[1]} if name == LOCAL_NODE else {}
            try:
                api.create_node(fake_node(name, labels))
            except Exception as e:
                if getattr(e, "status", None) != 409:  # already there after a restart
                    raise

        def all_ready() -> bool:
            ready = 0
            for n in api.list_node().items:
                conds = {c.type: c.status for c in (n.status.conditions or [])}
                ready += conds.get("Ready") == "True"
            return ready >= len(names)

        kwok.wait_healthy(all_ready, f"nodes {', '.join(names)} Ready", 90)
        self.timings["kwok+nodes"] = round(time.monotonic() - t0, 2)

    # -- clients -----------------------------------------------------------------------------
    def api_client(self) -> Any:
        return kube_client(self.kubeconfig)

    def core_api(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    def healthy(self) -> bool:
        if not all(p.running() for p in self.processes.values()):
            return False
        return _https_get(self.apiserver_port, "/readyz", self.ca_file, self.token) == 200

    def stop(self) -> None:
        """Clients of the apiserver first, then the apiserver, then etcd."""
        order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        for name in order:
            p = self.processes.get(name)
            if p is not None:
                p.signal(15)
        for name in order:
            p = self.processes.get(name)
            if p is not None:
                p.stop(timeout=5)  # throwaway state: no reason to wait longer
