"""The ingestor's gRPC listener as the operator renders it (spec.ingest.grpc): container port, Service
port ``grpc`` (appProtocol grpc), the process flags the ingestor parses, the TLS Secret's mount."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from alertpipe.operator.decisions.compile import compile_config
from alertpipe.operator.decisions.workloads import SECRETS_DIR, Owner, desired_objects, needs_update
from alertpipe.operator.models import AlertPipelineSpec
from alertpipe.workers.ingestor.cli import add_arguments

pytestmark = pytest.mark.unit

OWNER = Owner("tenant", "p", "uid-1")
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def spec(**ingest: Any) -> AlertPipelineSpec:
    return AlertPipelineSpec.model_validate(
        {"kafka": {"bootstrapServers": "k:9092"}, "redis": {"url": "redis://r:6379/0"}, "ingest": ingest}
    )


def objects(s: AlertPipelineSpec) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in desired_objects(OWNER, s, "img:1", {})}


def ingestor(s: AlertPipelineSpec) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(Deployment, its container, Service) of the ingestor."""
    objs = objects(s)
    dep = objs[("Deployment", "p-ingestor")]
    return dep, dep["spec"]["template"]["spec"]["containers"][0], objs[("Service", "p-ingestor")]


def parsed(container: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(container["command"][2:])  # after `alertpipe ingestor`


def test_grpc_is_closed_unless_enabled() -> None:
    _, c, svc = ingestor(spec())
    assert [p["name"] for p in c["ports"]] == ["http"]
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
    args = parsed(c)
    assert (args.grpc_port, args.grpc_tls_cert, args.grpc_tls_key) == (None, None, None)


def test_enabled_grpc_opens_container_port_service_port_and_the_flag() -> None:
    _, c, svc = ingestor(spec(grpc={"enabled": True, "port": 9443}))
    assert {"name": "grpc", "containerPort": 9443, "protocol": "TCP"} in c["ports"]
    grpc_port = {"name": "grpc", "port": 9443, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
    assert grpc_port in svc["spec"]["ports"]
    assert parsed(c).grpc_port == 9443
    assert parsed(c).grpc_tls_cert is None  # plaintext without tls
    # the other roles do not get it
    for role in ("evaluator", "deliverer"):
        cmd = objects(spec(grpc={"enabled": True}))[("Deployment", f"p-{role}")]["spec"]["template"]["spec"]
        assert "--grpc-port" not in cmd["containers"][0]["command"]
    # the default port
    _, c, _ = ingestor(spec(grpc={"enabled": True}))
    assert parsed(c).grpc_port == 9090


def test_tls_secret_is_mounted_and_the_flags_point_into_the_mount() -> None:
    dep, c, _ = ingestor(spec(grpc={"enabled": True, "tls": {"secretName": "ingest-tls"}}))
    args = parsed(c)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    (volume,) = [name for name, secret in volumes.items() if secret == "ingest-tls"]
    assert mounts[volume] == f"{SECRETS_DIR}/ingest-tls"
    assert args.grpc_tls_cert == f"{SECRETS_DIR}/ingest-tls/tls.crt"
    assert args.grpc_tls_key == f"{SECRETS_DIR}/ingest-tls/tls.key"
    # the TLS Secret is the ingestor's alone
    others = objects(spec(grpc={"enabled": True, "tls": {"secretName": "ingest-tls"}}))
    assert "ingest-tls" not in str(others[("Deployment", "p-deliverer")])
    # tls of a disabled listener mounts nothing
    dep, c, _ = ingestor(spec(grpc={"enabled": False, "tls": {"secretName": "ingest-tls"}}))
    assert "ingest-tls" not in str(dep)


def test_opening_grpc_rolls_the_ingestor_but_not_the_config_revision() -> None:
    plain, tls = spec(), spec(grpc={"enabled": True, "tls": {"secretName": "t"}})
    assert needs_update(ingestor(tls)[0], ingestor(plain)[0])
    assert needs_update(ingestor(tls)[2], ingestor(plain)[2])
    a, b = compile_config("ns", "p", plain, [], NOW), compile_config("ns", "p", tls, [], NOW)
    assert a.revision == b.revision
    assert "grpc" not in a.to_json().decode()


@pytest.mark.parametrize(
    ("grpc", "match"),
    [
        ({"enabled": True, "port": 8080}, "HTTP port"),
        ({"enabled": True, "port": 80}, r"ingest\.grpc\.port"),
        ({"enabled": True, "tls": {"secretName": "Not_A_Name"}}, r"ingest\.grpc\.tls\.secretName"),
        ({"enabled": True, "tls": {}}, r"ingest\.grpc\.tls\.secretName"),
    ],
)
def test_bad_grpc_settings_are_refused_with_the_field(grpc: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        spec(grpc=grpc)
