"""Rate schedules of the traffic generator: the due times follow the rate, the text forms parse."""

from __future__ import annotations

import pytest

from alertpipe.generate import ScheduleError, due_times, parse_schedule

pytestmark = pytest.mark.unit


def count(times: list[float], a: float, b: float) -> int:
    return sum(1 for t in times if a <= t < b)


def test_steady_is_evenly_spaced_at_the_rate() -> None:
    times = list(due_times(parse_schedule("steady:200"), 10.0))
    assert len(times) == 2000
    gaps = {round(b - a, 9) for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {0.005}


def test_step_changes_rate_at_its_edge() -> None:
    s = parse_schedule("step:100,400@5")
    times = list(due_times(s, 10.0))
    assert count(times, 0, 5) == 500
    assert count(times, 5, 10) == pytest.approx(2000, abs=1)
    assert len(times) == pytest.approx(s.expected_count(10.0), abs=1)


def test_burst_is_the_factor_for_its_length_then_back() -> None:
    s = parse_schedule("burst:100x10@2+3")
    times = list(due_times(s, 8.0))
    assert count(times, 0, 2) == 200
    assert count(times, 2, 5) == pytest.approx(3000, abs=1)
    assert count(times, 5, 8) == pytest.approx(300, abs=1)
    assert s.rate(1.9) == 100 and s.rate(2.0) == 1000 and s.rate(5.0) == 100


def test_diurnal_follows_its_integral() -> None:
    s = parse_schedule("diurnal:500,0.5,20")
    times = list(due_times(s, 20.0))
    assert len(times) == pytest.approx(s.expected_count(20.0), rel=0.01)
    # the first half-period (sine above 1) carries more than the second
    assert count(times, 0, 10) > 1.5 * count(times, 10, 20)


@pytest.mark.parametrize("text", ["steady:1000", "step:100,400@5", "burst:100x10@2+3", "diurnal:500,0.5,20"])
def test_text_round_trips(text: str) -> None:
    assert parse_schedule(text).text() == text


def test_a_bare_number_is_steady() -> None:
    assert parse_schedule("250").text() == "steady:250"


@pytest.mark.parametrize("text", ["warp:9", "steady:-1", "step:1,2", "burst:1x0@1+1", "diurnal:1,1.5,10",
                                  "burst:10x2@1+0", "steady:fast"])
def test_bad_schedules_name_the_forms(text: str) -> None:
    with pytest.raises(ScheduleError, match="schedule"):
        parse_schedule(text)
