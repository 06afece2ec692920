"""The ingestor's gRPC server: ``alertpipe.ingest.v1.Ingest`` (ingest.proto) beside POST /v1/events.

It runs in the HTTP server's event loop on the same Ingestor (config, API keys, producer), and
goes through the same path (accept.py): admit, validate, produce, await Kafka's acknowledgements.
HTTP answers map to gRPC status codes: 400/413 INVALID_ARGUMENT (with google.rpc.BadRequest field
violations ``events[<i>]``), 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 429 RESOURCE_EXHAUSTED and
503 UNAVAILABLE (both with google.rpc.RetryInfo and a ``retry-after`` trailer).

The handlers are registered by hand (a generic handler over the generated messages) rather than
through protoc's ``_pb2_grpc`` module: that module is untyped, and the table below is small. A
unit test checks it against the service in the .proto.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from alertpipe.workers.errors import ConfigError
from alertpipe.workers.ingestor import ingest_pb2 as pb
from alertpipe.workers.ingestor.accept import MAX_REJECTS_LISTED, Answer, admit, publish, too_large
from alertpipe.workers.ingestor.app import Ingestor
from alertpipe.workers.ingestor.body import BodyError, parse_events
from alertpipe.workers.tracing import TRACEPARENT

__all__ = ["SERVICE", "GrpcIngest", "GrpcTls", "Refusal", "refusal", "start_grpc_server"]

logger = logging.getLogger(__name__)

SERVICE = "alertpipe.ingest.v1.Ingest"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # gRPC's own cap; the pipeline's ingest.maxBodyBytes applies below it
STREAM_WINDOW = 32  # batches of one stream in flight at once (answered in order)

_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused call in gRPC terms: the code, the message, retry delay, field violations."""

    code: grpc.StatusCode
    message: str
    retry_after: int | None
    violations: tuple[tuple[str, str], ...]

    def trailers(self) -> tuple[tuple[str, str | bytes], ...]:
        """google.rpc.Status in ``grpc-status-details-bin`` (RetryInfo, BadRequest), and ``retry-after``."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        out: list[tuple[str, str | bytes]] = []
        if self.retry_after is not None:
            status.details.add().Pack(
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self.retry_after))
            )
            out.append(("retry-after", str(self.retry_after)))
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            status.details.add().Pack(bad)
        out.append((STATUS_DETAILS_KEY, status.SerializeToString()))
        return tuple(out)


def refusal(answer: Answer) -> Refusal:
    """The gRPC form of an HTTP answer that is not a 202."""
    code = _CODES.get(answer.status, grpc.StatusCode.INTERNAL)
    message = str(answer.body.get("error", f"HTTP {answer.status}"))
    violations: tuple[tuple[str, str], ...] = ()
    if answer.batch is not None and answer.batch.rejects:
        listed = answer.batch.rejects[:MAX_REJECTS_LISTED]
        violations = tuple((f"events[{r.index}]", r.reason) for r in listed)
        if answer.status == 400:
            first = listed[0]
            message += f" (events[{first.index}]: {first.reason}"
            message += f"; {len(answer.batch.rejects) - 1} more)" if len(answer.batch.rejects) > 1 else ")"
    return Refusal(code, message, answer.retry_after, violations)


def _response(batch_id: int, answer: Answer) -> pb.PublishResponse:
    batch = answer.batch
    resp = pb.PublishResponse(batch_id=batch_id, accepted=int(answer.body.get("accepted", 0)))
    if batch is not None and batch.rejects:
        resp.rejected_count = len(batch.rejects)
        resp.rejected.extend(
            pb.Rejected(index=r.index, reason=r.reason) for r in batch.rejects[:MAX_REJECTS_LISTED]
        )
    return resp


def _authorization(context: grpc.aio.ServicerContext[pb.PublishRequest, pb.PublishResponse]) -> str | None:
    return _metadata(context, "authorization")


def _metadata(
    context: grpc.aio.ServicerContext[pb.PublishRequest, pb.PublishResponse], name: str
) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class GrpcIngest:
    """The two RPCs over one Ingestor."""

    def __init__(self, ingestor: Ingestor, *, window: int = STREAM_WINDOW) -> None:
        self.ingestor = ingestor
        self.window = window

    async def _handle(
        self, request: pb.PublishRequest, authorization: str | None, traceparent: str | None = None
    ) -> Answer:
        ing = self.ingestor
        cfg, producer = ing.config, ing.producer
        refused = admit(cfg, producer, ing.draining, ing.keys.ring, authorization)
        if refused is not None:
            return refused
        assert cfg is not None and producer is not None  # noqa: S101 - admit checked them
        size = sum(len(e) for e in request.events)
        if size > cfg.ingest.max_body_bytes:
            return too_large(size, cfg.ingest.max_body_bytes)
        ing.metrics.body_bytes.inc(size)
        try:
            items = parse_events(request.events)
        except BodyError as exc:
            return Answer(400, {"error": str(exc)})
        tracing = ing.tracing.current
        return await publish(items, None, cfg, producer, ing.metrics, ing.now_ms(), ing.schemas, tracing,
                             traceparent if tracing.enabled else None)

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        self.ingestor.metrics.grpc_requests.labels(method, code.name).inc()

    async def publish(
        self,
        request: pb.PublishRequest,
        context: grpc.aio.ServicerContext[pb.PublishRequest, pb.PublishResponse],
    ) -> pb.PublishResponse:
        answer = await self._handle(request, _authorization(context), _metadata(context, TRACEPARENT))
        if answer.status == 202:
            self._count("Publish", grpc.StatusCode.OK)
            return _response(request.batch_id, answer)
        r = refusal(answer)
        self._count("Publish", r.code)
        await context.abort(r.code, r.message, trailing_metadata=r.trailers())

    async def publish_stream(
        self,
        requests: AsyncIterator[pb.PublishRequest],
        context: grpc.aio.ServicerContext[pb.PublishRequest, pb.PublishResponse],
    ) -> AsyncIterator[pb.PublishResponse]:
        """Read batches ahead (up to ``window`` in flight) and answer them in order.

        Reading runs in its own task so a client that waits for an answer before it sends more never
        deadlocks against a server waiting for the next request.
        """
        authorization = _authorization(context)
        traceparent = _metadata(context, TRACEPARENT)  # each batch of the stream is a span under it
        queue: asyncio.Queue[tuple[int, asyncio.Task[Answer]] | None] = asyncio.Queue(self.window)

        async def read() -> None:
            async for req in requests:
                task = asyncio.create_task(self._handle(req, authorization, traceparent))
                await queue.put((req.batch_id, task))
            await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                batch_id, task = item
                answer = await task
                if answer.status == 202:
                    self._count("PublishStream", grpc.StatusCode.OK)
                    yield _response(batch_id, answer)
                    continue
                r = refusal(answer)
                self._count("PublishStream", r.code)
                if answer.status in (401, 403):  # who may post does not change within a stream
                    await context.abort(r.code, r.message, trailing_metadata=r.trailers())
                resp = _response(batch_id, answer)
                resp.accepted = 0
                resp.status.CopyFrom(
                    pb.BatchStatus(
                        code=r.code.value[0], message=r.message, retry_after_ms=(r.retry_after or 0) * 1000
                    )
                )
                yield resp
            await reader
        finally:
            reader.cancel()
            while not queue.empty():
                left = queue.get_nowait()
                if left is not None:
                    left[1].cancel()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Publish": grpc.unary_unary_rpc_method_handler(
                    self.publish,
                    request_deserializer=pb.PublishRequest.FromString,
                    response_serializer=pb.PublishResponse.SerializeToString,
                ),
                "PublishStream": grpc.stream_stream_rpc_method_handler(
                    self.publish_stream,
                    request_deserializer=pb.PublishRequest.FromString,
                    response_serializer=pb.PublishResponse.SerializeToString,
                ),
            },
        )


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """The listener's certificate chain and private key, PEM files (a kubernetes.io/tls Secret's)."""

    cert_file: Path
    key_file: Path

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials from the files (read now: a rotated Secret is taken on restart);
        ConfigError naming the file when one is missing or not PEM."""
        pems: list[bytes] = []
        for what, path in (("--grpc-tls-cert", self.cert_file), ("--grpc-tls-key", self.key_file)):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(what, f"cannot read {path}: {exc.strerror}") from None
            if b"-----BEGIN " not in data:
                raise ConfigError(what, f"{path} is not PEM")
            pems.append(data)
        return grpc.ssl_server_credentials([(pems[1], pems[0])])


async def start_grpc_server(
    ingestor: Ingestor, host: str, port: int, tls: GrpcTls | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve the Ingest service on ``host:port`` (0: a free port) in this event loop; (server, port).
    With ``tls`` the port speaks TLS only: a plaintext client's handshake fails (UNAVAILABLE)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((GrpcIngest(ingestor).handler(),))
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, tls.credentials())
    await server.start()
    logger.info("ingestor gRPC listening on %s:%d (%s)", host, bound, "TLS" if tls else "plaintext")
    return server, bound
