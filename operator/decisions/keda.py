"""The KEDA engine's objects: a ScaledObject per autoscaled role (and a TriggerAuthentication when
Kafka needs credentials), as plain dicts.

The kafka trigger gets the same group, topic and reset policy the workers use (the contract's
names), lagThreshold and activation from the spec, ``allowIdleConsumers: false`` (KEDA then caps at
the partition count, as our own engine does) and the HPA behaviour unchanged. A kill switch that
stops the role pauses the ScaledObject at 0 replicas (KEDA's paused-replicas annotation).
"""

from __future__ import annotations

from typing import Any

from alertpipe.operator.autoscaling import AutoscalingSpec, ScalingBehavior
from alertpipe.operator.decisions.workloads import Owner, deployment_name, labels, with_hash
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.config.connection import DEFAULT_SASL_MECHANISM, DEFAULT_SECURITY_PROTOCOL

__all__ = [
    "KEDA_API",
    "PAUSED_REPLICAS",
    "desired_scaled_object",
    "desired_trigger_authentication",
    "scaled_object_name",
]

JSON = dict[str, Any]
KEDA_API = "keda.sh/v1alpha1"
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def scaled_object_name(pipeline: str, role: str) -> str:
    return deployment_name(pipeline, role)


def trigger_authentication_name(pipeline: str) -> str:
    return f"{pipeline}-kafka"


def _behavior(b: ScalingBehavior) -> JSON:
    out: JSON = {
        "stabilizationWindowSeconds": b.stabilization_window_seconds,
        "selectPolicy": b.select_policy,
    }
    if b.policies:
        out["policies"] = [p.model_dump(by_alias=True) for p in b.policies]
    return out


def _sasl(spec: AlertPipelineSpec) -> JSON:
    """KEDA's sasl / tls trigger fields for the pipeline's Kafka options (the defaults every role
    uses: alertpipe.workers.config.connection)."""
    opts = spec.kafka.client_options
    mechanism = opts.get("sasl.mechanism", DEFAULT_SASL_MECHANISM).upper()
    sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}.get(
        mechanism, "scram_sha512"
    )
    protocol = opts.get("security.protocol", DEFAULT_SECURITY_PROTOCOL).upper()
    tls = "enable" if protocol.endswith("SSL") else "disable"
    return {"sasl": sasl, "tls": tls}


def desired_scaled_object(
    owner: Owner,
    role: str,
    spec: AlertPipelineSpec,
    auto: AutoscalingSpec,
    group: str,
    topic: str,
    reset: str,
    polling_seconds: int,
    paused: bool,
) -> JSON:
    metadata: JSON = {
        "bootstrapServers": spec.kafka.bootstrap_servers,
        "consumerGroup": group,
        "topic": topic,
        "lagThreshold": str(auto.lag_threshold),
        "activationLagThreshold": str(auto.activation_lag),
        "offsetResetPolicy": reset,
        "allowIdleConsumers": "false",
    }
    trigger: JSON = {"type": "kafka", "metadata": metadata}
    if spec.kafka.credentials_secret_ref is not None:
        metadata.update(_sasl(spec))
        trigger["authenticationRef"] = {"name": trigger_authentication_name(owner.name)}
    meta: JSON = {
        "name": scaled_object_name(owner.name, role),
        "namespace": owner.namespace,
        "labels": labels(owner.name, role),
        "ownerReferences": [owner.reference()],
    }
    if paused:
        meta["annotations"] = {PAUSED_REPLICAS: "0"}
    return with_hash(
        {
            "apiVersion": KEDA_API,
            "kind": "ScaledObject",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment_name(owner.name, role),
                },
                "pollingInterval": polling_seconds,
                "minReplicaCount": auto.min_replicas,
                "maxReplicaCount": auto.max_replicas,
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {
                            "scaleUp": _behavior(auto.scale_up),
                            "scaleDown": _behavior(auto.scale_down),
                        }
                    }
                },
                "triggers": [trigger],
            },
        }
    )


def desired_trigger_authentication(owner: Owner, spec: AlertPipelineSpec) -> JSON | None:
    """KEDA's credentials for the kafka trigger, from the pipeline's Kafka Secret (None: no credentials)."""
    ref = spec.kafka.credentials_secret_ref
    if ref is None:
        return None
    return with_hash(
        {
            "apiVersion": KEDA_API,
            "kind": "TriggerAuthentication",
            "metadata": {
                "name": trigger_authentication_name(owner.name),
                "namespace": owner.namespace,
                "labels": labels(owner.name, "autoscaling"),
                "ownerReferences": [owner.reference()],
            },
            "spec": {
                "secretTargetRef": [
                    {"parameter": "username", "name": ref.name, "key": "sasl.username"},
                    {"parameter": "password", "name": ref.name, "key": "sasl.password"},
                ]
            },
        }
    )
