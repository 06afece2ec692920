"""gRPC ingest without a server: HTTP answers in gRPC terms, the error details, the handler table."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from alertpipe.workers.ingestor import ingest_pb2 as pb
from alertpipe.workers.ingestor.accept import Answer, too_large
from alertpipe.workers.ingestor.body import Batch, BodyError, Reject, parse_events
from alertpipe.workers.ingestor.grpc_server import SERVICE, STATUS_DETAILS_KEY, GrpcIngest, refusal

pytestmark = pytest.mark.unit


def details(trailers: tuple[tuple[str, str | bytes], ...]) -> status_pb2.Status:
    raw = dict(trailers)[STATUS_DETAILS_KEY]
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (413, grpc.StatusCode.INVALID_ARGUMENT),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (503, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_http_answers_map_to_grpc_codes(status: int, code: grpc.StatusCode) -> None:
    r = refusal(Answer(status, {"error": "why"}))
    assert (r.code, r.message) == (code, "why")


def test_backpressure_carries_retry_info() -> None:
    r = refusal(Answer(429, {"error": "busy: 9 events are waiting; retry later"}, retry_after=1))
    trailers = r.trailers()
    assert dict(trailers)["retry-after"] == "1"
    st = details(trailers)
    assert st.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and st.message.startswith("busy")
    info = error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(info) and info.retry_delay.seconds == 1


def test_invalid_events_are_field_violations() -> None:
    batch = Batch(
        [], [], [Reject(0, "seq is required: a non-negative integer"), Reject(2, "ts is required")], 3
    )
    r = refusal(Answer(400, {"error": "no valid events in the request"}, batch=batch))
    assert r.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (
        r.message
        == "no valid events in the request (events[0]: seq is required: a non-negative integer; 1 more)"
    )
    bad = error_details_pb2.BadRequest()
    st = details(r.trailers())
    assert st.details[0].Unpack(bad) and "retry-after" not in dict(r.trailers())
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("events[0]", "seq is required: a non-negative integer"),
        ("events[2]", "ts is required"),
    ]


def test_too_large_says_the_limit() -> None:
    r = refusal(too_large(2_000_000, 1_048_576))
    assert r.code is grpc.StatusCode.INVALID_ARGUMENT
    assert r.message == "2000000 bytes is over the limit of 1048576 bytes: send smaller batches"


def test_parse_events_names_the_malformed_one() -> None:
    assert parse_events([b'{"a": 1}', b"[2]"]) == [{"a": 1}, [2]]
    with pytest.raises(BodyError, match=r"^events\[1\]: malformed JSON at line 1 column"):
        parse_events([b"{}", b'{"a": '])


def test_handler_table_matches_the_proto() -> None:
    service = pb.DESCRIPTOR.services_by_name["Ingest"]
    assert service.full_name == SERVICE
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {"Publish": (False, False), "PublishStream": (True, True)}
    handler = GrpcIngest.__new__(GrpcIngest).handler()
    for name, (client_streaming, server_streaming) in methods.items():

        class Details(grpc.HandlerCallDetails):
            method = f"/{SERVICE}/{name}"
            invocation_metadata = ()

        h = handler.service(Details())
        assert h is not None, name
        assert (h.request_streaming, h.response_streaming) == (client_streaming, server_streaming)
        assert h.request_deserializer == pb.PublishRequest.FromString
