"""gRPC ingest against a real Kafka: answered after Kafka acknowledged, the same keys and validation as
HTTP, backpressure as RESOURCE_EXHAUSTED with RetryInfo, unary and streaming."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from alertpipe.workers.ingestor import INGEST_TS_FIELD, IngestorSettings
from alertpipe.workers.ingestor import ingest_pb2 as pb
from alertpipe.workers.ingestor.grpc_server import SERVICE, start_grpc_server

from .conftest import KEY, OTHER_TENANT_KEY, Running, events, make_config, read_topic, running_ingestor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

AUTH = (("authorization", f"Bearer {KEY}"),)


class Client:
    """A typed client over the two RPCs (what a user's protoc-generated stub would do)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.publish = channel.unary_unary(
            f"/{SERVICE}/Publish",
            request_serializer=pb.PublishRequest.SerializeToString,
            response_deserializer=pb.PublishResponse.FromString,
        )
        self.stream = channel.stream_stream(
            f"/{SERVICE}/PublishStream",
            request_serializer=pb.PublishRequest.SerializeToString,
            response_deserializer=pb.PublishResponse.FromString,
        )


def request(evs: list[Any], batch_id: int = 0) -> pb.PublishRequest:
    return pb.PublishRequest(events=[orjson.dumps(e) for e in evs], batch_id=batch_id)


@asynccontextmanager
async def grpc_client(ing: Running) -> AsyncIterator[Client]:
    server, port = await start_grpc_server(ing.ingestor, "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Client(channel)
    finally:
        await server.stop(1)


async def refused(call: Any) -> tuple[grpc.StatusCode, str, Any]:
    """Await a call that must fail: (code, message, google.rpc.Status from the trailers)."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    err = exc.value
    return err.code(), err.details() or "", rpc_status.from_call(err)


async def test_unary_and_stream_publish_after_kafka_acks(kafka_bootstrap: str, topic: str) -> None:
    bad = [{"tenant": "acme", "deviceId": "d", "seq": -1, "ts": 1, "type": "t"}, {"tenant": "acme"}]
    async with running_ingestor(make_config(kafka_bootstrap, topic)) as ing:
        # the same input over HTTP, for its reasons
        _, http, _ = await ing.post(bad)
        async with grpc_client(ing) as client:
            one = await client.publish(request(events(300) + bad, batch_id=7), metadata=AUTH)
            assert (one.batch_id, one.accepted, one.rejected_count) == (7, 300, 2)
            assert [(r.index, r.reason) for r in one.rejected] == [
                (300 + r["index"], r["reason"]) for r in http["rejected"]
            ]

            # a stream of 20 batches, sent all at once, answered in order after Kafka acknowledged
            async def batches() -> AsyncIterator[pb.PublishRequest]:
                for i in range(20):
                    yield request(events(100, start=1000 + i * 100), batch_id=i)

            answers = [a async for a in client.stream(batches(), metadata=AUTH)]
            assert [(a.batch_id, a.accepted, a.HasField("status")) for a in answers] == [
                (i, 100, False) for i in range(20)
            ]
            _, metrics = await ing.get("/metrics")
    records = read_topic(kafka_bootstrap, topic, expect=2300)
    seen = Counter((v["deviceId"], v["seq"]) for _, v, _ in records)
    assert len(seen) == 2300 and max(seen.values()) == 1
    assert all(k == v["deviceId"] and INGEST_TS_FIELD in v for k, v, _ in records)
    text = metrics.decode()
    assert 'alertpipe_ingestor_grpc_requests_total{code="OK",method="Publish"} 1.0' in text
    assert 'alertpipe_ingestor_grpc_requests_total{code="OK",method="PublishStream"} 20.0' in text
    assert "alertpipe_ingestor_events_accepted_total 2300.0" in text


async def test_keys_validation_and_backpressure(kafka_bootstrap: str, topic: str) -> None:
    settings = IngestorSettings(delivery_timeout=10.0, health_interval=0.25, max_inflight=50)
    async with running_ingestor(make_config(kafka_bootstrap, topic, max_body=16384), settings) as ing:
        async with grpc_client(ing) as client:
            code, msg, _ = await refused(client.publish(request(events(1))))
            assert code is grpc.StatusCode.UNAUTHENTICATED and "missing API key" in msg
            code, msg, _ = await refused(
                client.publish(
                    request(events(1)), metadata=(("authorization", "Bearer nope-nope-nope-nope"),)
                )
            )
            assert (code, msg) == (grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
            code, msg, _ = await refused(
                client.publish(
                    request(events(1)), metadata=(("authorization", f"Bearer {OTHER_TENANT_KEY}"),)
                )
            )
            assert code is grpc.StatusCode.PERMISSION_DENIED and "acme/p1" in msg
            code, msg, _ = await refused(client.stream(iter([request(events(1))])).read())
            assert code is grpc.StatusCode.UNAUTHENTICATED

            # validation: the whole request refused, each event named in BadRequest
            code, msg, st = await refused(
                client.publish(request([{"tenant": "acme"}, {"tenant": "globex"}]), metadata=AUTH)
            )
            assert code is grpc.StatusCode.INVALID_ARGUMENT and msg.startswith(
                "no valid events in the request (events[0]:"
            )
            bad = error_details_pb2.BadRequest()
            assert st.details[0].Unpack(bad)
            assert [v.field for v in bad.field_violations] == ["events[0]", "events[1]"]
            assert "does not belong to this pipeline" in bad.field_violations[1].description
            code, msg, _ = await refused(
                client.publish(pb.PublishRequest(events=[b"{}", b'{"x": '], batch_id=1), metadata=AUTH)
            )
            assert code is grpc.StatusCode.INVALID_ARGUMENT and msg.startswith(
                "events[1]: malformed JSON at line 1"
            )
            code, msg, _ = await refused(client.publish(request(events(200)), metadata=AUTH))
            assert code is grpc.StatusCode.INVALID_ARGUMENT and "over the limit of 16384 bytes" in msg

            # backpressure: more events than may await acknowledgement
            too_many = request(events(60))
            code, msg, st = await refused(client.publish(too_many, metadata=AUTH))
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and msg.startswith("busy:")
            info = error_details_pb2.RetryInfo()
            assert st.details[0].Unpack(info) and info.retry_delay.seconds == 1

            # on a stream a refused batch is answered with its status and the stream goes on
            answers = [
                a
                async for a in client.stream(iter([too_many, request(events(5), batch_id=9)]), metadata=AUTH)
            ]
            assert answers[0].status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert answers[0].status.retry_after_ms == 1000 and answers[0].accepted == 0
            assert (answers[1].batch_id, answers[1].accepted, answers[1].HasField("status")) == (9, 5, False)
    assert len(read_topic(kafka_bootstrap, topic, expect=5)) == 5


async def test_kafka_unreachable_is_unavailable_with_retry_info(unique: str) -> None:
    async with running_ingestor(make_config("127.0.0.1:1", unique), wait_ready=False) as ing:
        async with grpc_client(ing) as client:
            code, msg, st = await refused(client.publish(request(events(3)), metadata=AUTH))
    assert code is grpc.StatusCode.UNAVAILABLE and ("Kafka is unavailable" in msg or "not ready" in msg)
    info = error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(info) and info.retry_delay.seconds == 5
