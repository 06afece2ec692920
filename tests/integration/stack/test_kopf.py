"""Kopf runs against the devstack's apiserver: a handler sees a custom resource and patches its status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from devstack.kube import kube_client
from devstack.processes import wait_until

pytestmark = pytest.mark.integration
OPERATOR = Path(__file__).with_name("kopf_smoke_operator.py")
GROUP = "devstack-smoke.alertpipe.io"


def ensure_crd(ext: client.ApiextensionsV1Api) -> None:
    crd = client.V1CustomResourceDefinition.from_dict(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"kopfsmokes.{GROUP}"},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": "kopfsmokes", "singular": "kopfsmoke", "kind": "KopfSmoke"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {"type": "object", "properties": {"message": {"type": "string"}}},
                                    "status": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            }
                        },
                    }
                ],
            },
        }
    )
    assert crd is not None
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as e:
        if e.status != 409:
            raise

    def established() -> bool:
        st = ext.read_custom_resource_definition(f"kopfsmokes.{GROUP}").status
        return any(
            c.type == "Established" and c.status == "True" for c in (st.conditions if st else None) or []
        )

    wait_until(established, "CRD Established", 60)


def test_kopf_handler_sees_a_resource_and_patches_status(
    kubeconfig: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api = kube_client(kubeconfig)
    ensure_crd(client.ApiextensionsV1Api(api))
    co = client.CustomObjectsApi(api)
    args = ["run", "--standalone", f"--namespace={namespace}", "--verbose", str(OPERATOR)]
    with KopfRunner(args, timeout=60) as runner:
        co.create_namespaced_custom_object(
            GROUP, "v1", namespace, "kopfsmokes",
            {"apiVersion": f"{GROUP}/v1", "kind": "KopfSmoke", "metadata": {"name": "one"},
             "spec": {"message": "hello"}},
        )  # fmt: skip

        def patched() -> bool:
            obj: Any = co.get_namespaced_custom_object(GROUP, "v1", namespace, "kopfsmokes", "one")
            return bool(obj.get("status", {}).get("seen") == "kopf saw: hello")

        wait_until(patched, "status patched by the Kopf handler", 60)
    api.close()
    assert runner.exception is None
    assert runner.exit_code == 0
    assert "Handler 'on_create' succeeded" in runner.output
