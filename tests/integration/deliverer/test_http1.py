"""The lean HTTP/1.1 client against a real socket server: keep-alive reuse, a connection the server
closed while idle (resent once on a new one), Connection: close, chunked replies, timeouts, refusals,
and the SSRF guard in front of every new connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from alertpipe.workers.deliverer.http1 import ConnectError, Http1Pool, request_head
from alertpipe.workers.deliverer.senders import Senders
from alertpipe.workers.deliverer.ssrf import SsrfPolicy
from alertpipe.workers.errors import DeliveryError

pytestmark = pytest.mark.integration


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[tuple[str, bytes]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        hang_up_next = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
                body = await reader.readexactly(length)
                self.requests.append((path, body))
                if hang_up_next:  # as if the idle timeout struck just as the request arrived
                    break
                hang_up_next = path == "/hang-up-next"
                if path == "/slow":
                    await asyncio.sleep(5)
                elif path == "/chunked":
                    writer.write(
                        b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nRetry-After: 2\r\n\r\n"
                        b"4\r\nslow\r\n5\r\n down\r\n0\r\n\r\n"
                    )
                elif path == "/close":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye")
                    await writer.drain()
                    break
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if path == "/drop":  # close while idle, without saying so
                    await asyncio.sleep(0.05)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    srv = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.port = srv.sockets[0].getsockname()[1]
    try:
        yield s
    finally:
        srv.close()


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def head(path: str, body: bytes) -> bytes:
    return request_head("POST", path, "127.0.0.1", {"Content-Type": "application/json"}, len(body))


async def test_keep_alive_reuse_idle_close_and_close(server: Server) -> None:
    pool = Http1Pool(loopback)
    try:
        for i in range(20):
            body = b'{"n": %d}' % i
            resp = await pool.post("127.0.0.1", server.port, head("/ok", body), body, 5)
            assert (resp.status, resp.body, resp.keep_alive) == (200, body, True)
        assert server.connections == 1, "one keep-alive connection for sequential requests"

        # 32 at once: one connection each, then all of them reused
        await asyncio.gather(
            *(pool.post("127.0.0.1", server.port, head("/ok", b"x"), b"x", 5) for _ in range(32))
        )
        opened = server.connections
        await asyncio.gather(
            *(pool.post("127.0.0.1", server.port, head("/ok", b"y"), b"y", 5) for _ in range(32))
        )
        assert server.connections == opened and opened <= 33

        # the server closes an idle connection: the next request is resent once on a new one
        await pool.post("127.0.0.1", server.port, head("/drop", b"1"), b"1", 5)
        await asyncio.sleep(0.3)
        before = server.connections
        resp = await pool.post("127.0.0.1", server.port, head("/ok", b"after"), b"after", 5)
        assert resp.body == b"after"
        assert server.connections <= before + 1

        # ... and when the close races the request (no byte of a reply): resent once, not failed
        pool.close()
        await pool.post("127.0.0.1", server.port, head("/hang-up-next", b""), b"", 5)
        before = server.connections
        resp = await pool.post("127.0.0.1", server.port, head("/ok", b"again"), b"again", 5)
        assert resp.body == b"again" and server.connections == before + 1
        assert [p for p, b in server.requests[-2:]] == ["/ok", "/ok"], "sent twice: once lost, once answered"

        resp = await pool.post("127.0.0.1", server.port, head("/close", b""), b"", 5)
        assert (resp.status, resp.body, resp.keep_alive) == (200, b"bye", False)
        resp = await pool.post("127.0.0.1", server.port, head("/chunked", b""), b"", 5)
        assert (resp.status, resp.body, resp.headers["retry-after"]) == (429, b"slow down", "2")
    finally:
        pool.close()


async def test_timeout_and_refused(server: Server) -> None:
    pool = Http1Pool(loopback)
    try:
        with pytest.raises(TimeoutError):
            await pool.post("127.0.0.1", server.port, head("/slow", b""), b"", 0.3)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        with pytest.raises(ConnectError):
            await pool.post("127.0.0.1", closed_port, head("/ok", b""), b"", 2)
    finally:
        pool.close()


async def test_senders_classify_and_guard_through_the_lean_client(server: Server) -> None:
    from alertpipe.workers.alerts import Alert, alert_id
    from alertpipe.workers.config import ChannelSpec

    alert = Alert(
        id=alert_id("t", "p", "r", "g", 0),
        status="firing",
        tenant="t",
        pipeline="p",
        rule="r",
        severity="warning",
        group_key="g",
        channels=["x"],
        starts_at_ms=0,
        event_time_ms=0,
        processed_at_ms=0,
    )

    def spec(path: str) -> ChannelSpec:
        url = f"http://127.0.0.1:{server.port}{path}"
        return ChannelSpec.model_validate({"name": "x", "webhook": {"url": url, "timeout": "2s"}})

    allow = {"policy": SsrfPolicy.of(False, ("127.0.0.0/8",))}
    senders = Senders(lambda ref: "unused", lambda: allow["policy"])
    try:
        ok = await senders.send_webhook(alert, spec("/ok"), "key-1")
        assert ok.status == 200 and server.requests[-1][0] == "/ok"
        with pytest.raises(DeliveryError) as err:
            await senders.send_webhook(alert, spec("/chunked"), "key-2")
        assert err.value.status == 429 and err.value.retryable and err.value.retry_after == 2.0
        allow["policy"] = SsrfPolicy()  # loopback targets are refused before any connection
        n = len(server.requests)
        with pytest.raises(DeliveryError) as err:
            await senders.send_webhook(alert, spec("/ok"), "key-3")
        assert not err.value.retryable and len(server.requests) == n
    finally:
        await senders.close()


def test_the_pool_runs_on_uvloop() -> None:
    """uvloop's transports are not asyncio.Transport subclasses (`--loop uvloop`)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        s = Server()
        srv = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        pool = Http1Pool(loopback)
        try:
            port = srv.sockets[0].getsockname()[1]
            for i in range(3):
                resp = await pool.post("127.0.0.1", port, head("/ok", b"%d" % i), b"%d" % i, 5)
                assert (resp.status, resp.body) == (200, b"%d" % i)
            assert s.connections == 1
        finally:
            pool.close()
            srv.close()

    uvloop.run(main())
