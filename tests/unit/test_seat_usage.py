"""Seat usage (``tariffs.seat_usage``): examples, and properties against brute force."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs.seat_usage import SeatInterval, SeatUsage, presence_by_seat, seat_usage

HOUR = 3_600_000_000  # microseconds
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 2026-11-02 00:00 UTC: a Monday, far from any DST change in the zones below
T0 = int((datetime(2026, 11, 2, tzinfo=UTC) - EPOCH).total_seconds()) * 1_000_000


def iv(seat: str, start_h: float, end_h: float) -> SeatInterval:
    return SeatInterval(seat, T0 + int(start_h * HOUR), T0 + int(end_h * HOUR))


def test_given_logout_and_login_at_the_same_instant_then_they_do_not_overlap() -> None:
    usage = seat_usage([iv("a", 0, 2), iv("b", 2, 4)], T0, T0 + DAY, "UTC")
    assert usage == SeatUsage(peak_seats=1, seat_days=2, seat_seconds=4 * 3600)


def test_given_one_seat_on_two_switches_then_it_is_one_seat() -> None:
    usage = seat_usage([iv("a", 1, 5), iv("a", 3, 8)], T0, T0 + DAY, "UTC")
    assert usage == SeatUsage(peak_seats=1, seat_days=1, seat_seconds=7 * 3600)


def test_given_sessions_outside_the_period_then_they_are_clipped() -> None:
    # 22:00 the day before to 02:00; and 23:00 to 01:00 the day after
    usage = seat_usage([iv("a", -2, 2), iv("b", 23, 25)], T0, T0 + DAY, "UTC")
    assert usage == SeatUsage(peak_seats=1, seat_days=2, seat_seconds=3 * 3600)


def test_given_a_session_across_local_midnight_then_it_is_two_seat_days_in_that_zone() -> None:
    # 20:00 to 23:00 UTC on Nov 2 is 21:00 Nov 2 to 00:00 Nov 3 in Paris (UTC+1): one day;
    # 20:00 to 23:30 UTC is past local midnight: two days there, one in UTC
    one = [iv("a", 20, 23)]
    two = [iv("a", 20, 23.5)]
    period = (T0 - DAY, T0 + 2 * DAY)
    assert seat_usage(one, *period, "Europe/Paris").seat_days == 1
    assert seat_usage(two, *period, "Europe/Paris").seat_days == 2
    assert seat_usage(two, *period, "UTC").seat_days == 1


def test_given_zero_length_sessions_then_they_are_no_presence() -> None:
    usage = seat_usage([iv("refused", 3, 3), iv("a", 1, 2)], T0, T0 + DAY, "UTC")
    assert usage == SeatUsage(peak_seats=1, seat_days=1, seat_seconds=3600)


def test_given_a_period_ending_before_it_starts_then_it_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        seat_usage([], T0 + 1, T0, "UTC")


def test_given_fractional_seconds_then_the_total_is_rounded_down_once() -> None:
    intervals = [SeatInterval("a", T0, T0 + 600_000), SeatInterval("b", T0, T0 + 600_000)]
    assert seat_usage(intervals, T0, T0 + DAY, "UTC").seat_seconds == 1


# --- properties: compare with a brute force over an hourly grid ------------------------

SEATS = ["s1", "s2", "s3", "s4"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]
GRID = 96  # hours: 4 days


@st.composite
def intervals(draw: st.DrawFn) -> list[SeatInterval]:
    items = []
    for _ in range(draw(st.integers(0, 12))):
        start = draw(st.integers(0, GRID))
        end = draw(st.integers(start, GRID))
        items.append(SeatInterval(draw(st.sampled_from(SEATS)), T0 + start * HOUR, T0 + end * HOUR))
    return items


def _present(items: list[SeatInterval], hour: int) -> set[str]:
    moment = T0 + hour * HOUR  # the whole hour [moment, moment + HOUR) shares presence
    return {i.seat for i in items if i.start_us <= moment < i.end_us}


def _local_day(moment_us: int, tz: str) -> date:
    return (EPOCH + timedelta(microseconds=moment_us)).astimezone(ZoneInfo(tz)).date()


@settings(max_examples=300, deadline=None)
@given(intervals(), st.integers(0, GRID), st.integers(0, GRID), st.sampled_from(ZONES))
def test_property_usage_matches_brute_force_over_hours(
    items: list[SeatInterval], a: int, b: int, tz: str
) -> None:
    first, last = min(a, b), max(a, b)
    usage = seat_usage(items, T0 + first * HOUR, T0 + last * HOUR, tz)

    hours = range(first, last)
    present = {hour: _present(items, hour) for hour in hours}
    assert usage.peak_seats == max((len(s) for s in present.values()), default=0)
    assert usage.seat_seconds == sum(len(s) for s in present.values()) * 3600
    days = set()
    for hour, seats in present.items():
        start = T0 + hour * HOUR
        for moment in (start, start + HOUR - 1):  # an hour may span local midnight
            days |= {(seat, _local_day(moment, tz)) for seat in seats}
    assert usage.seat_days == len(days)


@settings(max_examples=200, deadline=None)
@given(intervals(), st.sampled_from(ZONES))
def test_property_order_and_splitting_do_not_change_usage(
    items: list[SeatInterval], tz: str
) -> None:
    period = (T0, T0 + GRID * HOUR)
    expected = seat_usage(items, *period, tz)
    split: list[SeatInterval] = []
    for item in items:  # cut every interval in two touching pieces
        middle = (item.start_us + item.end_us) // 2
        split += [
            SeatInterval(item.seat, item.start_us, middle),
            SeatInterval(item.seat, middle, item.end_us),
        ]
    shuffled = list(reversed(split))
    assert seat_usage(shuffled, *period, tz) == expected


@settings(max_examples=200, deadline=None)
@given(intervals())
def test_property_presence_is_disjoint_sorted_and_within_the_period(
    items: list[SeatInterval],
) -> None:
    start, end = T0 + 10 * HOUR, T0 + 70 * HOUR
    for spans in presence_by_seat(items, start, end).values():
        assert spans
        assert all(s < e for s, e in spans)
        assert all(e1 < s2 for (_s1, e1), (s2, _e2) in pairwise(spans))
        assert all(start <= s < e <= end for s, e in spans)
