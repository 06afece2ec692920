"""Load generator of the gRPC ingest benchmark: Publish calls or PublishStream streams, batches of events.

Runs as its own process (the server is measured, not the client). Requests are serialised once up
front and sent as bytes, so the client's protobuf cost stays out of the way. Prints one JSON line
like loadgen.py: answers by status, events accepted, a per-batch (end time, latency) series.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import grpc
import orjson

from alertpipe.workers.ingestor import ingest_pb2 as pb
from bench.ingestor.loadgen import bodies

SERVICE = "alertpipe.ingest.v1.Ingest"


def requests(batch: int, tenant: str, offset: int) -> list[bytes]:
    out = []
    for i, body in enumerate(bodies(batch, 64, tenant, offset)):
        evs = [orjson.dumps(e) for e in orjson.loads(body)]
        out.append(pb.PublishRequest(events=evs, batch_id=i).SerializeToString())
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--key", required=True)
    ap.add_argument("--tenant", default="bench")
    ap.add_argument("--mode", choices=("unary", "stream"), default="unary")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32, help="calls in flight (unary) or streams")
    ap.add_argument("--window", type=int, default=8, help="batches in flight per stream")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--ca", default=None, help="TLS: the CA file that signed the server's certificate")
    a = ap.parse_args()
    if not a.target.startswith(("127.0.0.1:", "localhost:")):
        sys.exit("grpc_loadgen: only loopback targets")
    payloads = requests(a.batch, a.tenant, a.offset)
    md = (("authorization", f"Bearer {a.key}"),)
    statuses: dict[str, int] = {}
    series: list[tuple[float, float]] = []
    events = 0
    t_end = time.monotonic() + a.seconds

    def count(status: str, t0: float, accepted: int) -> None:
        nonlocal events
        statuses[status] = statuses.get(status, 0) + 1
        if status == "OK":
            events += accepted
            series.append((time.time(), time.monotonic() - t0))

    if a.ca is None:
        opened = grpc.aio.insecure_channel(a.target)
    else:
        with open(a.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        opened = grpc.aio.secure_channel(a.target, creds)
    async with opened as channel:
        publish: grpc.aio.UnaryUnaryMultiCallable[bytes, pb.PublishResponse] = channel.unary_unary(
            f"/{SERVICE}/Publish", response_deserializer=pb.PublishResponse.FromString
        )
        stream: grpc.aio.StreamStreamMultiCallable[bytes, pb.PublishResponse] = channel.stream_stream(
            f"/{SERVICE}/PublishStream", response_deserializer=pb.PublishResponse.FromString
        )

        async def unary(w: int) -> None:
            i = w
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                try:
                    resp = await publish(payloads[i % len(payloads)], metadata=md)
                    count("OK", t0, resp.accepted)
                except grpc.aio.AioRpcError as exc:
                    count(exc.code().name, t0, 0)
                    await asyncio.sleep(0.05)
                i += 1

        async def streaming(w: int) -> None:
            call = stream(metadata=md)
            window = asyncio.Semaphore(a.window)
            sent: asyncio.Queue[float] = asyncio.Queue()

            async def read() -> None:
                async for resp in call:
                    t0 = sent.get_nowait()
                    window.release()
                    if resp.HasField("status"):
                        count(f"batch-{resp.status.code}", t0, 0)
                    else:
                        count("OK", t0, resp.accepted)

            reader = asyncio.create_task(read())
            i = w
            while time.monotonic() < t_end:
                await window.acquire()
                sent.put_nowait(time.monotonic())
                await call.write(payloads[i % len(payloads)])
                i += 1
            await call.done_writing()
            await reader

        worker = unary if a.mode == "unary" else streaming
        await asyncio.gather(*(worker(w) for w in range(a.concurrency)))
    sys.stdout.write(orjson.dumps({"statuses": statuses, "events": events, "series": series}).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(main())
