"""Rendering rules of charts/alertpipe, checked on `helm template` output (no cluster needed)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.tooling.helm import (
    CHART,
    CHART_CRDS,
    CRDS,
    ROOT,
    Doc,
    kube_version,
    load_crd_dir,
    of_kind,
    one,
    rules_of,
    run_helm,
    template,
    template_error,
)

pytestmark = [pytest.mark.integration, pytest.mark.tooling]  # runs `helm template` and openssl (not "no I/O")

NO_CRDS = {"crds": {"enabled": False}}


def container(docs: list[Doc]) -> Doc:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def env_of(c: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


# --- the chart as a whole -------------------------------------------------------------------------


def test_helm_lint_strict(helm: Path) -> None:
    out = run_helm(helm, ["lint", str(CHART), "--strict", "--kube-version", kube_version()])
    assert "0 chart(s) failed" in out


def test_default_render_has_every_part(helm: Path) -> None:
    docs = template(helm)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        }
    )
    # Namespaced objects land in the release namespace.
    for d in docs:
        if d["kind"] not in (
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "ValidatingWebhookConfiguration",
            "ClusterKopfPeering",
        ):
            assert d["metadata"]["namespace"] == "alertpipe-system", d["kind"]
    # Every object carries the chart's labels.
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "ap", d["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", d["kind"]
        assert labels["app.kubernetes.io/part-of"] == "alertpipe", d["kind"]


def test_every_values_key_is_commented() -> None:
    """Every key of values.yaml that a user sets has a comment right above it (sections excepted,
    their keys are commented one by one): walk the YAML nodes alongside the schema."""
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing: list[str] = []

    def walk(node: yaml.MappingNode, sch: dict[str, Any], path: str) -> None:
        for key, value in node.value:
            name = f"{path}{key.value}"
            sub = sch.get("properties", {}).get(key.value)
            assert sub is not None, f"values.yaml key {name} is not in values.schema.json"
            if "properties" in sub and isinstance(value, yaml.MappingNode):
                walk(value, sub, name + ".")
                continue
            above = lines[key.start_mark.line - 1].strip() if key.start_mark.line else ""
            if not above.startswith("#"):
                missing.append(name)

    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    walk(root, schema, "")
    assert not missing, f"values.yaml keys without a comment above them: {missing}"


def test_schema_covers_every_default_key() -> None:
    """The schema forbids unknown keys everywhere it defines properties; each default key is defined."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(v: Any, sch: dict[str, Any], path: str) -> None:
        if "properties" in sch:
            assert sch.get("additionalProperties") is False, (
                f"{path or '<root>'}: additionalProperties must be false"
            )
            assert isinstance(v, dict), path
            for key, sub in v.items():
                assert key in sch["properties"], f"{path}{key} missing from the schema"
                walk(sub, sch["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


# --- the schema and the fail messages -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCout": 2}, "additional properties 'replicaCout' not allowed"),
        ({"webhook": {"prot": 9443}}, "additional properties 'prot' not allowed"),
        ({"operator": {"watchNamespace": ["a"]}}, "additional properties 'watchNamespace' not allowed"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"webhook": {"failurePolicy": "fail"}}, "failurePolicy"),
        ({"operator": {"watchNamespaces": ["Team_A"]}}, "watchNamespaces"),
        ({"image": {"digest": "latest"}}, "digest"),
    ],
)
def test_schema_rejects(helm: Path, values: dict[str, Any], expected: str) -> None:
    assert expected in template_error(helm, values)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
            "podDisruptionBudget: set minAvailable or maxUnavailable, not both",
        ),
        (
            {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}},
            "podDisruptionBudget.minAvailable (2) must be below replicaCount (2)",
        ),
        (
            {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.enabled=true",
        ),
        (
            {"operator": {"healthPort": 9090, "metricsPort": 9090}},
            "operator.healthPort and operator.metricsPort must differ (both are 9090)",
        ),
        ({"webhook": {"port": 8081}}, "webhook.port (8081) must differ"),
        ({"replicaCount": 2, "peering": {"enabled": False}}, "replicaCount 2 needs peering.enabled=true"),
        (
            {"operator": {"watchNamespaces": ["a", "b", "a"]}},
            "operator.watchNamespaces lists a namespace twice",
        ),
        (
            {"serviceAccount": {"create": False}},
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
        (
            {"webhook": {"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer"}}}},
            "webhook.certManager.issuerRef needs a name",
        ),
    ],
)
def test_impossible_values_fail_with_a_clear_message(
    helm: Path, values: dict[str, Any], expected: str
) -> None:
    assert expected in template_error(helm, values)


# --- secure defaults ------------------------------------------------------------------------------


def test_secure_defaults(helm: Path) -> None:
    docs = template(helm, NO_CRDS)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    csc = c["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["runAsNonRoot"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in csc or csc["privileged"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # A read-only root filesystem with a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    # The token goes to the operator pod only, not to every pod that uses the account.
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False
    assert "hostNetwork" not in pod and "hostPID" not in pod
    # Probes on the health port.
    assert c["livenessProbe"]["httpGet"]["port"] == "health"
    assert c["readinessProbe"]["httpGet"]["port"] == "health"


def test_security_context_can_be_overridden(helm: Path) -> None:
    # Helm merges maps: set keys change, the other defaults stay, null removes one.
    docs = template(
        helm, {**NO_CRDS, "podSecurityContext": {"runAsUser": 2000, "fsGroup": 2000, "runAsGroup": None}}
    )
    psc = one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert psc == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- CRDs -----------------------------------------------------------------------------------------


def test_chart_reads_the_generated_crds_through_a_symlink() -> None:
    """files/crds links to the repository's crds/ (Helm reads no file outside the chart; a link cannot
    drift when `alertpipe crds --out crds/` regenerates them, a copy could)."""
    assert CHART_CRDS.is_symlink()
    assert CHART_CRDS.resolve() == CRDS.resolve()
    assert sorted(p.name for p in CHART_CRDS.glob("*.yaml")), (
        "crds/ is empty: run `alertpipe crds --out crds/`"
    )


def test_rendered_crds_equal_the_generated_ones(helm: Path) -> None:
    rendered = {d["metadata"]["name"]: d for d in of_kind(template(helm), "CustomResourceDefinition")}
    generated = load_crd_dir(CRDS)
    assert rendered.keys() == generated.keys()
    for name, crd in generated.items():
        got = rendered[name]
        assert got["spec"] == crd["spec"], f"{name}: rendered spec differs from crds/"
        assert got["apiVersion"] == crd["apiVersion"] and got["kind"] == crd["kind"]
        # Labels of the generated file are kept, the chart's are added.
        assert crd["metadata"].get("labels", {}).items() <= got["metadata"]["labels"].items()
        assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == "ap"
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_toggle_and_keep(helm: Path) -> None:
    assert not of_kind(template(helm, NO_CRDS), "CustomResourceDefinition")
    unkept = of_kind(template(helm, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert unkept
    for crd in unkept:
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


# --- replicas and the PodDisruptionBudget ---------------------------------------------------------


def test_single_replica_has_no_pdb(helm: Path) -> None:
    docs = template(helm, NO_CRDS)
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    assert not of_kind(docs, "PodDisruptionBudget")


@pytest.mark.parametrize(
    ("pdb", "expected"),
    [
        ({}, {"minAvailable": 1}),
        ({"maxUnavailable": 1}, {"maxUnavailable": 1}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
    ],
)
def test_several_replicas_get_a_pdb(helm: Path, pdb: dict[str, Any], expected: dict[str, Any]) -> None:
    docs = template(helm, {**NO_CRDS, "replicaCount": 3, "podDisruptionBudget": pdb})
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    spec = one(docs, "PodDisruptionBudget")["spec"]
    assert spec["selector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert {k: v for k, v in spec.items() if k != "selector"} == expected


def test_pdb_can_be_turned_off(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "replicaCount": 2, "podDisruptionBudget": {"enabled": False}})
    assert not of_kind(docs, "PodDisruptionBudget")


# --- RBAC -----------------------------------------------------------------------------------------


def test_rbac_is_least_privilege(helm: Path) -> None:
    docs = template(helm, NO_CRDS)
    for role, rule in rules_of(docs):
        where = f"{role['kind']} {role['metadata']['name']}: {rule}"
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            where
        )
        for verb in ("escalate", "bind", "impersonate", "deletecollection"):
            assert verb not in rule["verbs"], where
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"], where
        for cluster_scoped in ("customresourcedefinitions", "namespaces"):
            if cluster_scoped in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, where
    granted = {
        (g, r, v)
        for _, rule in rules_of(docs)
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for needed in [
        ("alertpipe.io", "alertpipelines", "watch"),
        ("alertpipe.io", "alertrules", "patch"),
        ("alertpipe.io", "alertpipelines/status", "patch"),
        ("", "configmaps", "create"),
        ("apps", "deployments", "update"),
        ("rbac.authorization.k8s.io", "roles", "create"),
        ("", "events", "create"),
        ("", "secrets", "get"),
    ]:
        assert needed in granted, needed
    # The Roles the operator hands to workers grant configmaps get/list/watch: it must hold them itself.
    for verb in ("get", "list", "watch"):
        assert ("", "configmaps", verb) in granted


def test_rbac_toggles(helm: Path) -> None:
    no_secrets = template(helm, {**NO_CRDS, "rbac": {"readSecrets": False}})
    assert not [r for _, r in rules_of(no_secrets) if "secrets" in r["resources"]]
    keda = template(helm, {**NO_CRDS, "rbac": {"keda": True}})
    assert [r for _, r in rules_of(keda) if "scaledobjects" in r["resources"]]
    assert not [r for _, r in rules_of(template(helm, NO_CRDS)) if "scaledobjects" in r["resources"]]
    none = template(helm, {**NO_CRDS, "rbac": {"create": False}})
    assert not [d for d in none if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


def test_all_namespaces_uses_cluster_roles(helm: Path) -> None:
    docs = template(helm, NO_CRDS)
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    bound = {
        b["roleRef"]["name"]
        for b in of_kind(docs, "ClusterRoleBinding")
        if {"kind": "ServiceAccount", "name": sa, "namespace": "alertpipe-system"} in b["subjects"]
    }
    assert bound == {r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")}
    assert "--namespace" not in container(docs)["args"]


def test_listed_namespaces_use_roles_there(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "operator": {"watchNamespaces": ["team-a", "team-b"]}})
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(docs, "RoleBinding")) == ["team-a", "team-b"]
    # Cluster-wide: only reading CRDs and namespaces.
    (cluster_role,) = of_kind(docs, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    args = container(docs)["args"]
    assert [a for i, a in enumerate(args) if i and args[i - 1] == "--namespace"] == ["team-a", "team-b"]
    # The webhook only looks at the watched namespaces.
    for hook in one(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        (expr,) = hook["namespaceSelector"]["matchExpressions"]
        assert expr == {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": ["team-a", "team-b"],
        }


# --- image and what the operator passes on to workers ---------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "alertpipe/alertpipe:{app}"),
        ({"tag": "1.2.3"}, "alertpipe/alertpipe:1.2.3"),
        (
            {"registry": "mirror.example:5000/", "tag": "1.2.3"},
            "mirror.example:5000/alertpipe/alertpipe:1.2.3",
        ),
        ({"digest": "sha256:" + "a" * 64, "tag": "ignored"}, "alertpipe/alertpipe@sha256:" + "a" * 64),
    ],
)
def test_image_reference_is_passed_to_workers(helm: Path, image: dict[str, Any], expected: str) -> None:
    app = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    docs = template(
        helm, {**NO_CRDS, "image": {**image, "pullPolicy": "Always"}, "imagePullSecrets": ["regcred"]}
    )
    c = container(docs)
    assert c["image"] == expected.format(app=app)
    assert c["imagePullPolicy"] == "Always"
    # The operator reads ALERTPIPE_WORKER_IMAGE (its --image default) for the Deployments it creates.
    assert env_of(c)["ALERTPIPE_WORKER_IMAGE"] == c["image"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_operator_args_and_extras(helm: Path) -> None:
    docs = template(
        helm,
        {
            **NO_CRDS,
            "operator": {
                "logLevel": "DEBUG",
                "extraArgs": ["--flag"],
                "extraEnv": [{"name": "X", "value": "1"}],
            },
        },
    )
    c = container(docs)
    args = c["args"]
    assert args[:2] == ["--log-level=DEBUG", "operator"]
    assert args[-1] == "--flag"
    assert env_of(c)["X"] == "1"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8081, "metrics": 9090, "webhook": 9443}
    assert args[args.index("--health-port") + 1] == "8081"
    assert args[args.index("--metrics-port") + 1] == "9090"
    assert args[args.index("--webhook-port") + 1] == "9443"
    assert args[args.index("--webhook-cert") + 1] == "/etc/alertpipe/webhook-tls/tls.crt"
    assert args[args.index("--webhook-key") + 1] == "/etc/alertpipe/webhook-tls/tls.key"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["webhook-tls"] == "/etc/alertpipe/webhook-tls"


def test_names_fit_and_follow_overrides(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "fullnameOverride": "x" * 63})
    for d in docs:
        assert len(d["metadata"]["name"]) <= 63, d["metadata"]["name"]
    docs = template(helm, {**NO_CRDS, "fullnameOverride": "ops"})
    assert one(docs, "Deployment")["metadata"]["name"] == "ops"
    assert {s["metadata"]["name"] for s in of_kind(docs, "Service")} == {"ops-metrics", "ops-webhook"}


# --- webhook --------------------------------------------------------------------------------------


def _openssl(*args: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout.decode()


def test_webhook_self_signed_certificate_is_valid_for_the_service(helm: Path, tmp_path: Path) -> None:
    docs = template(helm, NO_CRDS)
    secret = one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    hook_cfg = one(docs, "ValidatingWebhookConfiguration")
    for hook in hook_cfg["webhooks"]:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == data["ca.crt"]
        svc = hook["clientConfig"]["service"]
        assert svc["name"] == "ap-alertpipe-webhook" and svc["namespace"] == "alertpipe-system"
        assert hook["sideEffects"] == "None" and hook["failurePolicy"] == "Fail"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == ["alertpipe.io"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert {r for h in hook_cfg["webhooks"] for r in h["rules"][0]["resources"]} == {
        "alertpipelines",
        "alertrules",
    }
    (tmp_path / "ca.crt").write_bytes(data["ca.crt"])
    (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
    assert "tls.crt: OK" in _openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt"))
    sans = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt"))
    assert "DNS:ap-alertpipe-webhook.alertpipe-system.svc" in sans
    # The key matches the certificate.
    pub_cert = _openssl("x509", "-noout", "-pubkey", "-in", str(tmp_path / "tls.crt"))
    pub_key = _openssl("pkey", "-pubout", stdin=data["tls.key"])
    assert pub_cert == pub_key
    # The operator gets the certificate mounted and the webhook port exposed.
    c = container(docs)
    assert any(m["name"] == "webhook-tls" and m["readOnly"] for m in c["volumeMounts"])
    svc = one(docs, "Service", "ap-alertpipe-webhook")
    assert svc["spec"]["ports"][0]["targetPort"] == "webhook"


def test_webhook_off(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "webhook": {"enabled": False}})
    assert not of_kind(docs, "ValidatingWebhookConfiguration") and not of_kind(docs, "Secret")
    assert [s["metadata"]["name"] for s in of_kind(docs, "Service")] == ["ap-alertpipe-metrics"]
    c = container(docs)
    assert "webhook" not in {p["name"] for p in c["ports"]}
    assert "webhook-tls" not in {m["name"] for m in c["volumeMounts"]}
    assert "--webhook-port" not in c["args"]


def test_webhook_with_cert_manager(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "webhook": {"certManager": {"enabled": True}}})
    assert not of_kind(docs, "Secret")
    cert = one(docs, "Certificate")
    issuer = one(docs, "Issuer")
    assert cert["spec"]["issuerRef"] == {
        "name": issuer["metadata"]["name"],
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert "ap-alertpipe-webhook.alertpipe-system.svc" in cert["spec"]["dnsNames"]
    hook_cfg = one(docs, "ValidatingWebhookConfiguration")
    assert hook_cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"alertpipe-system/{cert['spec']['secretName']}"
    )
    assert all("caBundle" not in h["clientConfig"] for h in hook_cfg["webhooks"])
    # The pod mounts the Secret cert-manager writes.
    vols = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "webhook-tls",
        "secret": {"secretName": cert["spec"]["secretName"], "defaultMode": 0o440},
    } in vols
    # A given issuer: no chart-made one.
    docs = template(
        helm,
        {
            **NO_CRDS,
            "webhook": {
                "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
            },
        },
    )
    assert not of_kind(docs, "Issuer")
    assert one(docs, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_webhook_settings(helm: Path) -> None:
    sel = {"matchLabels": {"alertpipe.io/tenant": "yes"}}
    docs = template(
        helm,
        {**NO_CRDS, "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 3, "namespaceSelector": sel}},
    )
    for hook in one(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 3
        assert hook["namespaceSelector"] == sel


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_service_and_service_monitor(helm: Path) -> None:
    docs = template(
        helm,
        {
            **NO_CRDS,
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"}
            },
        },
    )
    svc = one(docs, "Service", "ap-alertpipe-metrics")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "15s"
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    off = template(helm, {**NO_CRDS, "metrics": {"enabled": False}})
    assert not [s for s in of_kind(off, "Service") if s["metadata"]["name"].endswith("-metrics")]


# --- peering (one active replica) -----------------------------------------------------------------


def test_peering_cluster_wide(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "replicaCount": 2})
    peering = one(docs, "ClusterKopfPeering")
    args = container(docs)["args"]
    assert args[args.index("--peering") + 1] == peering["metadata"]["name"] == "ap-alertpipe"
    assert env_of(container(docs)).keys() >= {"POD_ID"}
    granted = {
        (g, r, v)
        for _, rule in rules_of(docs)
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in granted
    assert not [r for _, r in rules_of(docs) if "kopfpeerings" in r["resources"]]


def test_peering_per_watched_namespace(helm: Path) -> None:
    docs = template(
        helm,
        {
            **NO_CRDS,
            "replicaCount": 2,
            "peering": {"name": "ops"},
            "operator": {"watchNamespaces": ["team-a", "team-b"]},
        },
    )
    assert not of_kind(docs, "ClusterKopfPeering")
    peerings = of_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "ops"),
        ("team-b", "ops"),
    ]
    for role in of_kind(docs, "Role"):
        assert {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"],
        } in role["rules"]


def test_peering_off(helm: Path) -> None:
    docs = template(helm, {**NO_CRDS, "peering": {"enabled": False}})
    assert not of_kind(docs, "ClusterKopfPeering") and not of_kind(docs, "KopfPeering")
    assert "--peering" not in container(docs)["args"]
    assert not [r for _, r in rules_of(docs) if "kopf.dev" in r["apiGroups"]]


def test_kopf_peering_crds_ship_in_the_chart_crds_folder() -> None:
    """Helm installs crds/ before the templates, so the peering object can be created in one install."""
    names = {
        d["metadata"]["name"] for d in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text())
    }
    assert names == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    # Only Kopf's CRDs there: alertpipe's own are templates behind crds.enabled.
    assert [p.name for p in (CHART / "crds").iterdir()] == ["kopf-peering.yaml"]


def test_every_values_key_is_in_the_install_docs() -> None:
    """docs/install.md carries the values reference: a key added to values.yaml must be added there."""
    doc = (ROOT / "docs" / "install.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing: list[str] = []

    def walk(v: Any, sch: dict[str, Any], path: str) -> None:
        for key, sub in v.items():
            sub_schema = sch["properties"][key]
            if "properties" in sub_schema and isinstance(sub, dict):
                walk(sub, sub_schema, f"{path}{key}.")
            elif f"| `{path}{key}` |" not in doc:
                missing.append(f"{path}{key}")

    walk(values, schema, "")
    assert not missing, f"docs/install.md values reference lacks: {missing}"


def test_chart_app_version_is_the_package_version() -> None:
    """The chart installs the alertpipe release it was cut with: appVersion = pyproject's version."""
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert str(chart["appVersion"]) == project["version"]


def test_notes_point_at_files_that_exist() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    paths = re.findall(r"\bexamples/[\w./-]*", notes)
    assert paths, "NOTES.txt should point at an example to start from"
    for path in paths:
        assert (ROOT / path.rstrip(".")).exists(), path


def test_packaged_chart_renders_like_the_folder(helm: Path, tmp_path: Path) -> None:
    """`helm package` keeps what the chart needs (files/crds, crds/): .helmignore drops nothing used."""
    run_helm(helm, ["package", str(CHART), "--destination", str(tmp_path)])
    (tgz,) = tmp_path.glob("alertpipe-*.tgz")
    out = run_helm(helm, ["template", "ap", str(tgz), "--namespace", "alertpipe-system",
                          "--kube-version", kube_version(), "--include-crds"])  # fmt: skip
    packaged = [d for d in yaml.safe_load_all(out) if d]
    folder = template(helm)

    def key(d: Doc) -> tuple[str, str]:
        return (d["kind"], d["metadata"]["name"])

    peering_crds = {
        ("CustomResourceDefinition", n) for n in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
    }
    assert {key(d) for d in packaged} == {key(d) for d in folder} | peering_crds
    crds = {d["metadata"]["name"]: d for d in of_kind(packaged, "CustomResourceDefinition")}
    for name, crd in load_crd_dir(CRDS).items():
        assert crds[name]["spec"] == crd["spec"], name


def test_argocd_health_checks_configmap_holds_the_scripts_verbatim(helm: Path) -> None:
    assert not of_kind(template(helm, NO_CRDS), "ConfigMap")
    docs = template(helm, {**NO_CRDS, "argocd": {"healthChecks": {"enabled": True}}})
    cm = one(docs, "ConfigMap")
    scripts = CHART / "files" / "argocd" / "alertpipe.io"
    for kind in ("AlertPipeline", "AlertRule"):
        key = f"resource.customizations.health.alertpipe.io_{kind}"
        assert cm["data"][key].strip() == (scripts / kind / "health.lua").read_text().strip()
