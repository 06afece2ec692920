"""Parked deliveries (retry-topic records): headers round-trip, a broken record names what is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertpipe.workers.deliverer.records import Parked

pytestmark = pytest.mark.unit
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


def test_received_rows_are_put_back_once_per_read() -> None:
    from alertpipe.workers.deliverer.records import AuditEntry, Decision, expand_received

    def rec(decision: Decision, at: int, channel: str, received: int | None) -> AuditEntry:
        return AuditEntry(
            "a1", decision, at, status="firing", channel=channel, received_ms=received, fired_ms=0
        )

    log = [
        rec("delivered", 105, "x", 100),
        rec("retry", 103, "y", 100),
        rec("delivered", 110, "y", 100),
        rec("skipped_delivered", 205, "x", 200),  # read a second time (a redelivery)
        rec("delivered", 300, "y", None),  # from the retry topic: no read of its own
    ]
    out = expand_received(log)
    assert [(e.decision, e.at_ms, e.channel) for e in out] == [
        ("received", 100, ""),
        ("retry", 103, "y"),
        ("delivered", 105, "x"),
        ("delivered", 110, "y"),
        ("received", 200, ""),
        ("skipped_delivered", 205, "x"),
        ("delivered", 300, "y"),
    ]
    assert out[0].reason == "fired at 1970-01-01T00:00:00.000Z (event time)"
