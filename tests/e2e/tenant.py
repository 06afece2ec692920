"""A tenant's pipeline for the e2e tests: its Secrets (ingest API keys, webhook signing key and any
others), the receiver told the signing key, and the demo pipeline's body pointing at the receiver
(the test adjusts its spec, then creates it)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from devstack.pipeline import ThreadedReceiver, demo_pipeline
from devstack.pytest_plugin import LocalPods

__all__ = ["HOOK_PATH", "tenant_pipeline"]

HOOK_PATH = "/webhook/ops"


def tenant_pipeline(api: client.ApiClient, namespace: str, receiver: ThreadedReceiver, pod_runner: LocalPods,
                    kafka_bootstrap: str, redis_url: str, name: str, api_key: str, signing_secret: str,
                    *secrets: tuple[str, str, str]) -> dict[str, Any]:
    """Secrets ``ingest-keys`` / ``keys`` and ``hook`` / ``secret``, plus ``secrets`` (name, key,
    value); the receiver checks signatures on HOOK_PATH with the signing secret; the body."""
    core = client.CoreV1Api(api)
    receiver.receiver.secrets[HOOK_PATH] = signing_secret.encode()
    for sname, key, value in (("ingest-keys", "keys", f"{namespace}:{api_key}\n"),
                              ("hook", "secret", signing_secret), *secrets):
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=sname), string_data={key: value}))
    hook = receiver.receiver.url(HOOK_PATH)
    return demo_pipeline(name, kafka_bootstrap, redis_url, hook, pod_runner.node_selector)
