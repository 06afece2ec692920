"""The Kubernetes objects a pipeline owns, as plain dicts: ConfigMap, ServiceAccount, Role,
RoleBinding, one Deployment per enabled role and the ingestor's Service.

Each object carries ``alertpipe.io/desired-hash`` (a hash of what the operator asked for); the operator
writes only when that hash, or a field others may drift (replicas), differs from the live object.
Comparing hashes, not live fields, keeps apiserver defaulting and quantity normalisation from turning
every resync into a write.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from alertpipe.operator.decisions.compile import CONFIG_KEY, config_map_name
from alertpipe.operator.models import GROUP, ROLES, VERSION, AlertPipelineSpec, Role, WorkloadSpec
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
    "labels",
    "latency_args",
    "needs_update",
    "secret_refs",
    "with_hash",
    "worker_account_name",
]

JSON = dict[str, Any]
DESIRED_HASH = "alertpipe.io/desired-hash"
REVISION_ANNOTATION = "alertpipe.io/revision"
SECRETS_DIR = "/var/run/secrets/alertpipe"
INGESTOR_PORT = 8080
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


def _meta(owner: Owner, name: str, component: str | None) -> JSON:
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


def desired_config_map(owner: Owner, config: PipelineConfig) -> JSON:
    meta = _meta(owner, config_map_name(owner.name), "config")
    meta["annotations"] = {REVISION_ANNOTATION: config.revision}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {CONFIG_KEY: config.to_json().decode()},
    }


def desired_service_account(owner: Owner) -> JSON:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(owner, worker_account_name(owner.name), "worker"),
            "automountServiceAccountToken": True,
        }
    )


def desired_role(owner: Owner) -> JSON:
    """Workers may read their one ConfigMap and nothing else (Secrets arrive as volumes)."""
    return with_hash(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(owner, worker_account_name(owner.name), "worker"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    # the stable config and a canary rollout's candidate config (rollouts)
                    "resourceNames": [config_map_name(owner.name), f"{owner.name}-config-canary"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        }
    )


def desired_role_binding(owner: Owner) -> JSON:
    name = worker_account_name(owner.name)
    return with_hash(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(owner, name, "worker"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        }
    )


def secret_refs(spec: AlertPipelineSpec, role: Role) -> list[SecretKeyRef]:
    """Secrets a role needs mounted: Kafka and Redis for all, API keys for the ingestor, channels
    for the deliverer. No role sees a Secret it does not use."""
    refs: list[SecretKeyRef | None] = [spec.kafka.credentials_secret_ref, spec.redis.url_secret_ref]
    if role == "ingestor":
        refs.append(spec.ingest.api_keys_secret_ref)
    if role == "deliverer":
        for c in spec.channels:
            refs += [
                c.webhook.signing_secret_ref if c.webhook else None,
                c.slack.webhook_url_secret_ref if c.slack else None,
                c.pagerduty.routing_key_secret_ref if c.pagerduty else None,
                c.email.username_secret_ref if c.email else None,
                c.email.password_secret_ref if c.email else None,
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
        role,
        "--config",
        f"configmap:{owner.namespace}/{config_map_name(owner.name)}",
        "--secrets-dir",
        SECRETS_DIR,
        *latency_args(role, spec),
    ]
    env: list[JSON] = [
        {"name": "ALERTPIPE_TENANT", "value": owner.namespace},
        {"name": "ALERTPIPE_PIPELINE", "value": owner.name},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if role == "ingestor":
        ports = [{"name": "http", "containerPort": INGESTOR_PORT, "protocol": "TCP"}]
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
    meta = _meta(owner, name, role)
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


def desired_service(owner: Owner) -> JSON:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(owner, deployment_name(owner.name, "ingestor"), "ingestor"),
            "spec": {
                "type": "ClusterIP",
                "selector": {
                    "app.kubernetes.io/instance": owner.name,
                    "app.kubernetes.io/component": "ingestor",
                    "alertpipe.io/pipeline": owner.name,
                },
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
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
        out.append(desired_service(owner))
    return out
