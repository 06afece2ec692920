"""The Kubernetes objects a pipeline owns, as plain dicts: ConfigMap, the workers' identity
(access.py), one Deployment per enabled role and the ingestor's Service.

What every owned object carries and when one needs a write (owner, labels, desired hash, drift) is in
owned.py; its names are exported here as well, for the callers that build objects from both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from alertpipe.operator.decisions.access import desired_role, desired_role_binding, desired_service_account
from alertpipe.operator.decisions.compile import CONFIG_KEY, config_map_name
from alertpipe.operator.decisions.owned import (
    DESIRED_HASH,
    Owner,
    deployment_name,
    drifted,
    labels,
    needs_update,
    object_meta,
    with_hash,
    worker_account_name,
)
from alertpipe.operator.ingest_models import HTTP_PORT, TLS_CERT_KEY, TLS_KEY_KEY
from alertpipe.operator.models import ROLES, AlertPipelineSpec, Role, WorkloadSpec
from alertpipe.workers.config.durations import parse_duration
from alertpipe.workers.config.models import PipelineConfig, SecretKeyRef

__all__ = [
    "DEFAULT_RESOURCES",
    "DESIRED_HASH",
    "INGESTOR_PORT",
    "METRICS_PORT",
    "SECRETS_DIR",
    "Owner",
    "deployment_name",
    "desired_config_map",
    "desired_deployment",
    "desired_objects",
    "desired_role",
    "desired_role_binding",
    "desired_service",
    "desired_service_account",
    "drifted",
    "grpc_args",
    "labels",
    "latency_args",
    "needs_update",
    "secret_refs",
    "with_hash",
    "worker_account_name",
]

JSON = dict[str, Any]
REVISION_ANNOTATION = "alertpipe.io/revision"
SECRETS_DIR = "/var/run/secrets/alertpipe"
INGESTOR_PORT = HTTP_PORT


def desired_config_map(owner: Owner, config: PipelineConfig) -> JSON:
    meta = object_meta(owner, config_map_name(owner.name), "config")
    meta["annotations"] = {REVISION_ANNOTATION: config.revision}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {CONFIG_KEY: config.to_json().decode()},
    }


def secret_refs(spec: AlertPipelineSpec, role: Role) -> list[SecretKeyRef]:
    """Secrets a role needs mounted: Kafka for all, Redis for all but the history sink, API keys for
    the ingestor, the tracing collector's headers for the three traced roles, channels for the
    deliverer. No role sees a Secret it does not use (the history's DSN reaches its sink as an
    environment variable from the kubelet)."""
    refs: list[SecretKeyRef | None] = [spec.kafka.credentials_secret_ref]
    if role != "history":
        refs.append(spec.redis.url_secret_ref)
    if role == "ingestor":
        refs.append(spec.ingest.api_keys_secret_ref)
        grpc = spec.ingest.grpc
        if grpc.enabled and grpc.tls is not None:
            refs.append(SecretKeyRef(name=grpc.tls.secret_name, key=TLS_CERT_KEY))
    if role in ("ingestor", "evaluator", "deliverer") and spec.tracing is not None:
        refs.append(spec.tracing.headers_secret_ref)  # the collector's credentials
    if role == "deliverer":
        for c in spec.channels:
            refs += [
                c.webhook.signing_secret_ref if c.webhook else None,
                c.slack.webhook_url_secret_ref if c.slack else None,
                c.pagerduty.routing_key_secret_ref if c.pagerduty else None,
                c.email.username_secret_ref if c.email else None,
                c.email.password_secret_ref if c.email else None,
                c.sms.auth_token_secret_ref if c.sms else None,
                c.push.access_token_secret_ref if c.push else None,
                c.push.service_account_secret_ref if c.push else None,
            ]
    return [r for r in refs if r is not None]


def _volume_name(secret: str) -> str:
    if len(secret) <= 56 and re.fullmatch(r"[a-z0-9-]+", secret):
        return f"secret-{secret}"
    return "secret-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


# Requests and limits of a role whose spec sets none (a spec that sets either section is taken as
# written, so a request above a default limit can never make an invalid pod).
DEFAULT_RESOURCES: dict[str, JSON] = {
    "ingestor": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "evaluator": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "deliverer": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "history": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
}
WORKER_UID = 10001  # the image's user (Dockerfile)
METRICS_PORT = 9102  # evaluator and deliverer: /metrics, /healthz, /readyz (alertpipe.workers.health)


def _probes(role: str) -> JSON:
    """Startup, liveness and readiness probes on the port that serves /healthz and /readyz.

    The startup probe allows up to 90 s for the first config (the evaluator opens its port only then);
    liveness then restarts a process that stops answering for 30 s; readiness reports /readyz.
    """
    port = "http" if role == "ingestor" else "metrics"
    return {
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 2,
            "failureThreshold": 45,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
    }


def latency_args(role: Role, spec: AlertPipelineSpec) -> list[str]:
    """The role's hot-path flags from ``spec.latency`` (always written, defaults too: the pod spec
    says what runs)."""
    lat = spec.latency
    if role == "ingestor":
        return ["--linger-ms", str(lat.linger_ms)]
    if role == "evaluator":
        return ["--linger-ms", str(lat.linger_ms),
                "--checkpoint-interval", f"{parse_duration(lat.checkpoint_interval):g}"]
    return []


def grpc_args(role: Role, spec: AlertPipelineSpec) -> list[str]:
    """The ingestor's gRPC listener from ``spec.ingest.grpc``: its port and, with TLS, the mounted
    certificate and key (the pod runner and the kubelet mount the Secret at the same path)."""
    grpc = spec.ingest.grpc
    if role != "ingestor" or not grpc.enabled:
        return []
    out = ["--grpc-port", str(grpc.port)]
    if grpc.tls is not None:
        folder = f"{SECRETS_DIR}/{grpc.tls.secret_name}"
        out += ["--grpc-tls-cert", f"{folder}/{TLS_CERT_KEY}", "--grpc-tls-key", f"{folder}/{TLS_KEY_KEY}"]
    return out


def _history_args(role: Role, spec: AlertPipelineSpec) -> list[str]:
    return ["--retention-days", str(spec.history.retention_days)] if role == "history" else []


def _history_env(role: Role, spec: AlertPipelineSpec) -> list[JSON]:
    """The sink's database, from its Secret key (the DSN may hold a password: never in the args)."""
    ref = spec.history.dsn_secret_ref
    if role != "history" or ref is None:
        return []
    source = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
    return [{"name": "ALERTPIPE_HISTORY_DSN", "valueFrom": source}]


def desired_deployment(
    owner: Owner,
    role: Role,
    workload: WorkloadSpec,
    image: str,
    spec: AlertPipelineSpec,
    pull_policy: str = "IfNotPresent",
    pull_secrets: Sequence[str] = (),
    scaled_replicas: int | None = None,
) -> JSON:
    """The role's Deployment. ``scaled_replicas`` (an autoscaled role): those replicas, left out of
    the desired hash, so a scaler's change of replicas is never taken for a spec change."""
    name = deployment_name(owner.name, role)
    secrets = sorted({r.name for r in secret_refs(spec, role)})
    selector = {
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": role,
        "alertpipe.io/pipeline": owner.name,
    }
    command = [
        "alertpipe",
        *(["history", "sink"] if role == "history" else [role]),
        "--config",
        f"configmap:{owner.namespace}/{config_map_name(owner.name)}",
        "--secrets-dir",
        SECRETS_DIR,
        *latency_args(role, spec),
        *grpc_args(role, spec),
        *_history_args(role, spec),
    ]
    env: list[JSON] = [
        {"name": "ALERTPIPE_TENANT", "value": owner.namespace},
        {"name": "ALERTPIPE_PIPELINE", "value": owner.name},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *_history_env(role, spec),
    ]
    if role == "ingestor":
        ports = [{"name": "http", "containerPort": INGESTOR_PORT, "protocol": "TCP"}]
        if spec.ingest.grpc.enabled:
            ports.append({"name": "grpc", "containerPort": spec.ingest.grpc.port, "protocol": "TCP"})
    else:
        command += ["--metrics-port", str(METRICS_PORT)]
        ports = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
        # Kafka static membership (group.instance.id = pod name): a container restarted in its pod
        # (crash, OOM, liveness) takes its partitions back at once instead of after a rebalance.
        pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
        env.append({"name": "ALERTPIPE_INSTANCE_ID", "valueFrom": pod_name})
    container: JSON = {
        "name": role,
        "image": workload.image or image,
        "imagePullPolicy": workload.image_pull_policy or pull_policy,
        "command": command,
        "env": env,
        "ports": ports,
        **_probes(role),
        "resources": workload.resources.model_dump(exclude_defaults=True) or DEFAULT_RESOURCES[role],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - a private emptyDir
        + [{"name": _volume_name(s), "mountPath": f"{SECRETS_DIR}/{s}", "readOnly": True} for s in secrets],
    }
    names = [r.name for r in spec.image_pull_secrets]
    names += [n for n in pull_secrets if n not in names]
    body: JSON = {
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": labels(owner.name, role)},
            "spec": _pod_spec(owner, workload, container, secrets, names),
        },
    }
    if scaled_replicas is None:
        body = {"replicas": workload.replicas, **body}
    meta = object_meta(owner, name, role)
    out = with_hash({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body})
    if scaled_replicas is not None:
        out["spec"] = {"replicas": scaled_replicas, **body}
    return out


def _pod_spec(
    owner: Owner, workload: WorkloadSpec, container: JSON, secrets: list[str], pull_secrets: list[str]
) -> JSON:
    pod: JSON = {
        "serviceAccountName": worker_account_name(owner.name),
        "enableServiceLinks": False,  # many pipelines per namespace: no env var per Service
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
        + [{"name": _volume_name(s), "secret": {"secretName": s}} for s in secrets],
    }
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    if workload.node_selector:
        pod["nodeSelector"] = dict(workload.node_selector)
    if workload.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in workload.tolerations]
    return pod


def desired_service(owner: Owner, spec: AlertPipelineSpec) -> JSON:
    """The ingestor's ClusterIP Service: port 80 ``http`` and, with ``spec.ingest.grpc``, ``grpc``
    (appProtocol grpc, so a mesh or a Gateway routes it as HTTP/2)."""
    ports: list[JSON] = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    if spec.ingest.grpc.enabled:
        g = spec.ingest.grpc
        ports.append({"name": "grpc", "port": g.port, "targetPort": "grpc", "protocol": "TCP",
                      "appProtocol": "grpc"})  # fmt: skip
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(owner, deployment_name(owner.name, "ingestor"), "ingestor"),
            "spec": {
                "type": "ClusterIP",
                "selector": {
                    "app.kubernetes.io/instance": owner.name,
                    "app.kubernetes.io/component": "ingestor",
                    "alertpipe.io/pipeline": owner.name,
                },
                "ports": ports,
            },
        }
    )


def desired_objects(
    owner: Owner,
    spec: AlertPipelineSpec,
    image: str,
    role_images: Mapping[str, str],
    pull_policy: str = "IfNotPresent",
    pull_secrets: Sequence[str] = (),
    scaled_replicas: Mapping[str, int] | None = None,
) -> list[JSON]:
    """Every owned object except the ConfigMap, in apply order; disabled roles are absent.
    ``scaled_replicas``: replicas of the autoscaled roles (see :func:`desired_deployment`)."""
    out = [desired_service_account(owner), desired_role(owner), desired_role_binding(owner)]
    for role in ROLES:
        workload: WorkloadSpec = getattr(spec, role)
        if workload.enabled:
            out.append(
                desired_deployment(
                    owner,
                    role,
                    workload,
                    role_images.get(role, image),
                    spec,
                    pull_policy,
                    pull_secrets,
                    (scaled_replicas or {}).get(role),
                )
            )
    if spec.ingestor.enabled:
        out.append(desired_service(owner, spec))
    return out
