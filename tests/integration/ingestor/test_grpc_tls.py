"""gRPC ingest over TLS: a client trusting the devstack's CA publishes (answered after Kafka acks);
a plaintext client, and a client trusting another CA, are refused before any RPC reaches the server."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from alertpipe.workers.ingestor.grpc_server import GrpcTls, start_grpc_server
from devstack.secure import make_tls

from .conftest import events, make_config, read_topic, running_ingestor
from .test_grpc import AUTH, Client, refused, request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_tls_listener_serves_trusted_clients_and_refuses_plaintext(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    tls_dir = make_tls(tmp_path / "tls")
    other_ca = make_tls(tmp_path / "other") / "ca.crt"
    tls = GrpcTls(tls_dir / "tls.crt", tls_dir / "tls.key")
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        server, port = await start_grpc_server(ing.ingestor, "127.0.0.1", 0, tls)
        try:
            trusted = grpc.ssl_channel_credentials(root_certificates=(tls_dir / "ca.crt").read_bytes())
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", trusted) as channel:
                answer = await Client(channel).publish(request(events(40), batch_id=3), metadata=AUTH)
            assert (answer.batch_id, answer.accepted, answer.rejected_count) == (3, 40, 0)

            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = Client(channel).publish(request(events(5, start=100)), metadata=AUTH, timeout=10)
                code, _, _ = await refused(call)
            assert code is grpc.StatusCode.UNAVAILABLE

            untrusted = grpc.ssl_channel_credentials(root_certificates=other_ca.read_bytes())
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", untrusted) as channel:
                call = Client(channel).publish(request(events(5, start=200)), metadata=AUTH, timeout=10)
                code, _, _ = await refused(call)
            assert code is grpc.StatusCode.UNAVAILABLE
            _, metrics = await ing.get("/metrics")
        finally:
            await server.stop(1)
    # only the trusted client's events reached Kafka; the refused ones never got to the handler
    records = read_topic(kafka_bootstrap, topic, expect=40)
    assert sorted(v["seq"] for _, v, _ in records) == list(range(40))
    text = metrics.decode()
    assert 'alertpipe_ingestor_grpc_requests_total{code="OK",method="Publish"} 1.0' in text
    assert 'code="UNAVAILABLE"' not in text
