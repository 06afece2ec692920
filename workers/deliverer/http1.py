"""A lean HTTP/1.1 keep-alive client for webhook POSTs to plain ``http://`` targets (asyncio protocol).

Why hand-written: aiohttp's per-request cost is the floor of the deliverer's throughput. Measured on
the 2-core benchmark VM (4,000 POSTs of a 750-byte body, 64 concurrent, to bench/deliverer/sink.py,
two runs, load average ~4.4): aiohttp 286–299 µs CPU per request; a bare asyncio protocol that
writes one buffer and parses the reply 126–168 µs (110 µs under uvloop) — most of what is left is
the send/recv/epoll syscalls. This module is that protocol plus what a webhook client needs: a pool
of idle connections per (host, port), Content-Length, chunked and read-to-close bodies, 1xx replies
skipped, ``Connection: close`` and HTTP/1.0 honoured, one retry on a fresh connection when a reused
one turns out closed before any byte of the reply, a total timeout, and the SSRF-guarding resolver
on every new connection. Everything else stays with aiohttp: https (TLS), proxies, Slack and
PagerDuty. Requests are never pipelined.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

__all__ = ["ConnectError", "Http1Pool", "ProtocolError", "Response", "ResponseParser", "request_head"]

MAX_HEAD = 64 * 1024
MAX_KEPT_BODY = 64 * 1024  # a larger reply body is read through but only its start is kept


class ProtocolError(ConnectionError):
    """The reply is not HTTP/1.x as we understand it; the connection is dropped."""


class ConnectError(OSError):
    """No connection could be made (refused, unreachable, DNS); ``reason`` says why."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes  # at most MAX_KEPT_BODY bytes
    keep_alive: bool


class ResponseParser:
    """Sans-I/O parser of one HTTP/1.x response; ``feed`` returns it once complete, else None."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = True
        self._mode = ""  # "" head, "length", "chunked", "close", "done"
        self._left = 0  # bytes of the body (length) or of the current chunk still to come
        self._chunk_state = "size"  # size, data, crlf, trailers
        self._body = bytearray()
        self.started = False  # any byte of the reply seen

    def feed(self, data: bytes) -> Response | None:
        if data:
            self.started = True
        self._buf += data
        while True:
            if self._mode == "":
                if not self._head():
                    return None
            elif self._mode == "length":
                take = min(self._left, len(self._buf))
                self._keep(self._buf[:take])
                del self._buf[:take]
                self._left -= take
                if self._left:
                    return None
                return self._done()
            elif self._mode == "chunked":
                if not self._chunks():
                    return None
                return self._done()
            elif self._mode == "close":
                self._keep(self._buf)
                self._buf.clear()
                return None
            else:
                return None

    def eof(self) -> Response | None:
        """The server closed the connection: the reply if it was read-to-close, else None (cut short)."""
        if self._mode == "close":
            return self._done()
        return None

    def _keep(self, data: bytes | bytearray) -> None:
        room = MAX_KEPT_BODY - len(self._body)
        if room > 0:
            self._body += data[:room]

    def _done(self) -> Response:
        self._mode = "done"
        if self._buf:  # bytes after the reply we did not ask for: do not reuse the connection
            self._keep_alive = False
        return Response(self._status, self._headers, bytes(self._body), self._keep_alive)

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"reply head longer than {MAX_HEAD} bytes")
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t":
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            headers[name.lower()] = value.strip()
        if 100 <= status < 200:
            return True  # an interim reply (100 Continue, 103): the real one follows
        self._status = status
        self._headers = headers
        conn = headers.get("connection", "").lower()
        self._keep_alive = "close" not in conn and (version != "HTTP/1.0" or "keep-alive" in conn)
        te = headers.get("transfer-encoding", "").lower()
        if status in (204, 304):
            self._mode, self._left = "length", 0
        elif te:
            if te.rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"unsupported transfer-encoding {te!r}")
            self._mode = "chunked"
        elif "content-length" in headers:
            cl = headers["content-length"]
            if not cl.isdigit():
                raise ProtocolError(f"bad content-length {cl[:40]!r}")
            self._mode, self._left = "length", int(cl)
        else:
            self._mode, self._keep_alive = "close", False
        return True

    def _chunks(self) -> bool:
        """Consume chunked body from the buffer; True once the last chunk and trailers are in."""
        buf = self._buf
        while True:
            if self._chunk_state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ProtocolError("chunk size line too long")
                    return False
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    self._left = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                self._chunk_state = "data" if self._left else "trailers"
            elif self._chunk_state == "data":
                take = min(self._left, len(buf))
                self._keep(buf[:take])
                del buf[:take]
                self._left -= take
                if self._left:
                    return False
                self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del buf[:2]
                self._chunk_state = "size"
            else:  # trailers: lines until an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("trailers too long")
                    return False
                del buf[: end + 2]
                if end == 0:
                    return True


class _Conn(asyncio.Protocol):
    """One connection: at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            resp = parser.feed(data)
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if resp is not None:
            self._parser = self._waiter = None
            waiter.set_result(resp)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser, waiter = self._parser, self._waiter
        self._parser = self._waiter = None
        if waiter is None or waiter.done():
            return
        resp = parser.eof() if parser is not None else None
        if resp is not None:
            waiter.set_result(resp)
        elif parser is not None and not parser.started:
            waiter.set_exception(_Closed())
        else:
            waiter.set_exception(ConnectionResetError("the server closed the connection mid-reply"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def request(self, data: bytes, loop: asyncio.AbstractEventLoop, deadline: float) -> Response:
        assert self.transport is not None  # noqa: S101 - connected before use
        waiter: asyncio.Future[Response] = loop.create_future()
        self._parser, self._waiter = ResponseParser(), waiter
        self.transport.write(data)
        timer = loop.call_at(deadline, _expire, waiter, self)
        try:
            return await waiter
        finally:
            timer.cancel()


class _Closed(ConnectionResetError):
    """A reused connection was closed by the server before any byte of the reply: safe to resend."""


def _expire(waiter: asyncio.Future[Response], conn: _Conn) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
    conn.abort()


Resolve = Callable[[str, int], Awaitable[list[str]]]


class Http1Pool:
    """Keep-alive connections per (host, port); ``post`` sends one request and reads its reply."""

    def __init__(self, resolve: Resolve, *, max_idle_per_host: int = 512, idle_timeout: float = 15.0) -> None:
        self._resolve = resolve
        self._idle: dict[tuple[str, int], deque[_Conn]] = {}
        self._max_idle = max_idle_per_host
        self._idle_timeout = idle_timeout

    def _take_idle(self, key: tuple[str, int], now: float) -> _Conn | None:
        q = self._idle.get(key)
        while q:
            c = q.pop()  # the most recently used: the least likely to have been closed by the server
            if not c.closed and now - c.idle_since < self._idle_timeout:
                return c
            c.close()
        return None

    def _give_back(self, key: tuple[str, int], conn: _Conn, now: float) -> None:
        q = self._idle.get(key)
        if q is None:
            q = self._idle[key] = deque()
        if len(q) >= self._max_idle:
            q.popleft().close()
        conn.idle_since = now
        q.append(conn)

    async def _connect(self, host: str, port: int, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn:
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self._resolve(host, port)
                last: OSError | None = None
                for ip in addresses:
                    try:
                        _, conn = await loop.create_connection(_Conn, ip, port)
                    except OSError as exc:
                        last = exc
                        continue
                    sock = conn.transport.get_extra_info("socket") if conn.transport else None
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return conn
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectError(exc.errno or 0, exc.strerror or str(exc)) from None
        if last is None:
            raise ConnectError(0, f"{host} resolves to no address")
        raise ConnectError(last.errno or 0, last.strerror or str(last))

    async def post(self, host: str, port: int, head: bytes, body: bytes, timeout: float) -> Response:
        """POST ``head + body`` (``head``: request line and headers, ending in a blank line)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = (host, port)
        data = head + body
        for _ in range(2):
            conn = self._take_idle(key, time.monotonic())
            reused = conn is not None
            if conn is None:
                conn = await self._connect(host, port, loop, deadline)
            try:
                resp = await conn.request(data, loop, deadline)
            except _Closed:
                if reused:
                    continue  # the server had closed the idle connection: once more on a new one
                raise ConnectionResetError("the server closed the connection without replying") from None
            except BaseException:
                conn.abort()
                raise
            if resp.keep_alive and not conn.closed:
                self._give_back(key, conn, time.monotonic())
            else:
                conn.close()
            return resp
        raise ConnectionResetError("the server closed two connections without replying")

    def close(self) -> None:
        for q in self._idle.values():
            for c in q:
                c.close()
        self._idle.clear()


def request_head(method: str, target: str, host_header: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers; refuses CR or LF in any of them (header injection)."""
    parts = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    parts.extend(f"{k}: {v}" for k, v in headers.items())
    parts.append(f"Content-Length: {length}")
    for part in parts:
        if "\r" in part or "\n" in part:
            raise ValueError(f"CR or LF in the request head: {part[:60]!r}")
    return "\r\n".join(parts).encode("latin-1") + b"\r\n\r\n"
