"""A tiny Kopf operator for the devstack smoke test: it records each KopfSmoke's message in status."""

from __future__ import annotations

import os
from typing import Any

import kopf
import yaml

GROUP, VERSION, PLURAL = "devstack-smoke.alertpipe.io", "v1", "kopfsmokes"


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials straight from the devstack's kubeconfig (token + the apiserver's CA)."""
    with open(os.environ["KUBECONFIG"]) as f:
        kc = yaml.safe_load(f)
    cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
    return kopf.ConnectionInfo(
        server=cluster["server"], ca_path=cluster["certificate-authority"], token=user["token"]
    )


@kopf.on.create(GROUP, VERSION, PLURAL)
def on_create(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["seen"] = f"kopf saw: {spec['message']}"
