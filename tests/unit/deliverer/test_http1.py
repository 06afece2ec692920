"""The lean HTTP/1.1 client's reply parser: bodies by length, chunks or close, in any split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.deliverer.http1 import (
    MAX_KEPT_BODY,
    ProtocolError,
    Response,
    ResponseParser,
    request_head,
)

pytestmark = pytest.mark.unit


def feed_in_pieces(raw: bytes, cuts: list[int]) -> tuple[Response | None, ResponseParser]:
    p = ResponseParser()
    out = None
    prev = 0
    for c in [*sorted(set(cuts)), len(raw)]:
        if out is not None:
            break
        out = p.feed(raw[prev:c])
        prev = c
    return out, p


def chunked(body: bytes, size: int) -> bytes:
    parts = [
        b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\nX-Trailer: 1\r\n\r\n"


bodies = st.binary(max_size=3000)


@given(body=bodies, cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_content_length_in_any_split(body: bytes, cuts: list[int]) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(body) + body
    resp, _ = feed_in_pieces(raw, [c for c in cuts if c < len(raw)])
    assert resp == Response(200, {"content-length": str(len(body)), "x-a": "b"}, body, True)


@given(body=bodies, size=st.integers(1, 700), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_chunked_in_any_split(body: bytes, size: int, cuts: list[int]) -> None:
    raw = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n" + chunked(body, size)
    resp, _ = feed_in_pieces(raw, [c for c in cuts if c < len(raw)])
    assert resp is not None
    assert (resp.status, resp.body, resp.keep_alive, resp.headers["retry-after"]) == (503, body, True, "3")


def test_read_to_close_ends_at_eof_and_is_not_reused() -> None:
    p = ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\n\r\nhello ") is None
    assert p.feed(b"world") is None
    assert p.eof() == Response(200, {}, b"hello world", False)


def test_a_cut_reply_is_not_a_reply() -> None:
    p = ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") is None
    assert p.eof() is None and p.started
    assert not ResponseParser().started


def test_interim_replies_are_skipped_and_no_body_statuses_have_none() -> None:
    p = ResponseParser()
    resp = p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert resp == Response(204, {}, b"", True)


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1", False),  # bytes nobody asked for
    ],
)
def test_keep_alive(head: bytes, keep: bool) -> None:
    resp = ResponseParser().feed(head)
    assert resp is not None and resp.keep_alive is keep


def test_large_bodies_are_read_through_but_clipped() -> None:
    body = b"x" * (MAX_KEPT_BODY + 10)
    resp = ResponseParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert resp is not None and resp.body == body[:MAX_KEPT_BODY]


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
    ],
)
def test_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(raw)


def test_request_head_refuses_header_injection() -> None:
    head = request_head("POST", "/hook?a=1", "example.com:8080", {"Idempotency-Key": "k1"}, 12)
    assert head == (
        b"POST /hook?a=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
        b"Idempotency-Key: k1\r\nContent-Length: 12\r\n\r\n"
    )
    with pytest.raises(ValueError, match="CR or LF"):
        request_head("POST", "/", "h", {"X-A": "v\r\nEvil: 1"}, 0)
