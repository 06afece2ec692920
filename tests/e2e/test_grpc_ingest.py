# mypy: disable-error-code="union-attr, index, arg-type"
"""gRPC ingest through the operator: a pipeline with ``spec.ingest.grpc`` (TLS from a kubernetes.io/tls
Secret) gets an ingestor pod serving gRPC on its own port and a Service port ``grpc``; a client
trusting the Secret's CA publishes over TLS, the rule fires and the webhook is paged once; a
plaintext client is refused. The pods run as local processes (the devstack's pod runner)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import orjson
import pytest
from kubernetes import client

from alertpipe.workers.ingestor import ingest_pb2 as pb
from alertpipe.workers.ingestor.grpc_server import SERVICE
from devstack import pipeline as dp
from devstack.pytest_plugin import LocalPods
from devstack.secure import make_tls

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

API_KEY = "e2e-grpc-key-0123456789abcdef"
SIGNING_SECRET = "e2e-grpc-signing-secret"  # noqa: S105 - a test fixture value
GRPC_PORT = 50051
T = TypeVar("T")


def publish(channel: grpc.Channel, events: list[dict[str, object]], batch_id: int) -> pb.PublishResponse:
    call = channel.unary_unary(
        f"/{SERVICE}/Publish",
        request_serializer=pb.PublishRequest.SerializeToString,
        response_deserializer=pb.PublishResponse.FromString,
    )
    req = pb.PublishRequest(events=[orjson.dumps(e) for e in events], batch_id=batch_id)
    answer: pb.PublishResponse = call(req, metadata=(("authorization", f"Bearer {API_KEY}"),), timeout=20)
    return answer


def test_operator_run_ingestor_answers_grpc_over_tls_and_pages(
    api: client.ApiClient,
    namespace: str,
    operator: Path,
    pod_runner: LocalPods,
    receiver: dp.ThreadedReceiver,
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rec = receiver.receiver
    rec.secrets["/webhook/ops"] = SIGNING_SECRET.encode()
    tls = make_tls(tmp_path / "tls")
    for name, type_, data in (
        ("ingest-keys", "Opaque", {"keys": f"{namespace}:{API_KEY}\n"}),
        ("hook", "Opaque", {"secret": SIGNING_SECRET}),
        ("ingest-tls", "kubernetes.io/tls",
         {"tls.crt": (tls / "tls.crt").read_text(), "tls.key": (tls / "tls.key").read_text()}),
    ):  # fmt: skip
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), type=type_, string_data=data)
        )
    hook = rec.url("/webhook/ops")
    body = dp.demo_pipeline("wire", kafka_bootstrap, redis_url, hook, pod_runner.node_selector)
    body["spec"]["ingest"]["grpc"] = {"enabled": True, "port": GRPC_PORT, "tls": {"secretName": "ingest-tls"}}
    co.create_namespaced_custom_object(dp.GROUP, dp.VERSION, namespace, "alertpipelines", body)
    co.create_namespaced_custom_object(dp.GROUP, dp.VERSION, namespace, "alertrules", dp.demo_rule("wire"))

    def ready() -> bool:
        c = dp.condition(co, namespace, "wire", "Ready")
        return c is not None and c["status"] == "True"

    try:
        dp.wait_for(ready, "AlertPipeline Ready=True", 180)
    except AssertionError:
        raise AssertionError(operator.read_text()[-3000:]) from None
    svc = core.read_namespaced_service("wire-ingestor", namespace)
    ports = {p.name: p for p in svc.spec.ports}
    grpc_port = ports["grpc"]
    assert (grpc_port.port, grpc_port.target_port, grpc_port.app_protocol) == (GRPC_PORT, "grpc", "grpc")
    address = dp.pod_address(core, namespace, "wire", "ingestor")
    dp.wait_for(lambda: dp.http("GET", f"http://{address}:8080/readyz")[0] == 200, "ingestor /readyz", 120)

    # the pod's own loopback address is not in the certificate: the client checks the name localhost
    creds = grpc.ssl_channel_credentials(root_certificates=(tls / "ca.crt").read_bytes())
    options = [("grpc.ssl_target_name_override", "localhost")]
    t0 = int(time.time() * 1000)
    evs = [dp.event(namespace, "d1", 1, t0, 50), dp.event(namespace, "d1", 2, t0 + 6000, 95)]
    with grpc.secure_channel(f"{address}:{GRPC_PORT}", creds, options=options) as channel:
        answer = dp.wait_for(lambda: _unless_unavailable(lambda: publish(channel, evs, batch_id=1)),
                             "gRPC Publish over TLS", 60, every=0.5)  # fmt: skip
    assert (answer.batch_id, answer.accepted, answer.rejected_count) == (1, 2, 0)
    dp.wait_for(lambda: rec.recorder.accepted("/webhook/ops"), "the firing alert at the webhook", 90)
    (page,) = rec.recorder.accepted("/webhook/ops")
    assert page.signature_ok and page.json["alert"]["status"] == "firing"
    assert "CPU 95 on d1" in page.json["alert"]["annotations"]["summary"]

    with grpc.insecure_channel(f"{address}:{GRPC_PORT}") as plain:
        with pytest.raises(grpc.RpcError) as refused:
            publish(plain, [dp.event(namespace, "d9", 1, t0, 99)], batch_id=2)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    _, metrics = dp.http("GET", f"http://{address}:8080/metrics")
    assert b'alertpipe_ingestor_grpc_requests_total{code="OK",method="Publish"} 1.0' in metrics
    assert rec.recorder.duplicates() == 0


def _unless_unavailable(fn: Callable[[], T]) -> T | None:
    """``fn()``, or None while the listener is not up yet (UNAVAILABLE)."""
    try:
        return fn()
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            return None
        raise
