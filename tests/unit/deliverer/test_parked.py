"""Parked deliveries (retry-topic records): headers round-trip, a broken record names what is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.deliverer.records import Parked

ints = st.integers(min_value=0, max_value=2**53)


@given(
    channel=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40),
    attempts=st.integers(0, 100),
    hops=st.integers(0, 10_000),
    nb=ints,
    origin=ints,
    produced=ints,
    first=ints,
    replay=st.booleans(),
    status=st.none() | st.integers(100, 599),
    response=st.text(max_size=50).map(str.strip),
)
def test_headers_round_trip(
    channel: str,
    attempts: int,
    hops: int,
    nb: int,
    origin: int,
    produced: int,
    first: int,
    replay: bool,
    status: int | None,
    response: str,
) -> None:
    p = Parked(channel, attempts, hops, nb, origin, produced, first, replay, status, response)
    headers: list[tuple[str, bytes | None]] = list(p.headers())
    assert Parked.from_headers(headers) == p


def test_long_responses_are_clipped_and_other_headers_ignored() -> None:
    p = Parked("ops", 3, 1, 10, 5, 5, 6, last_status=503, last_response="x" * 1000)
    back = Parked.from_headers([("traceparent", b"00-abc"), *p.headers()])
    assert back.last_response == "x" * 300 and back.last_status == 503


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("alertpipe-retry-channel", "without header alertpipe-retry-channel"),
        ("alertpipe-retry-not-before-ms", "without header alertpipe-retry-not-before-ms"),
    ],
)
def test_a_missing_header_is_named(drop: str, message: str) -> None:
    headers = [h for h in Parked("ops", 1, 1, 10, 5, 5, 6).headers() if h[0] != drop]
    with pytest.raises(ValueError, match=message):
        Parked.from_headers(headers)  # type: ignore[arg-type]


def test_a_malformed_number_is_named() -> None:
    headers = [
        (k, b"soon" if k == "alertpipe-retry-attempts" else v)
        for k, v in Parked("ops", 1, 1, 10, 5, 5, 6).headers()
    ]
    with pytest.raises(ValueError, match="alertpipe-retry-attempts is not an integer"):
        Parked.from_headers(headers)  # type: ignore[arg-type]
