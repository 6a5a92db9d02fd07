"""Peak concurrency and overage channel-seconds: hand-computed tables and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tariffs.concurrency import (
    ConcurrencyError,
    ConcurrencySweep,
    Interval,
    concurrency_profile,
    daily_peaks,
    day_cuts,
    overage_cost,
    overage_us,
    peak,
    to_us,
    us_to_seconds,
)

S = 1_000_000  # one second in microseconds


def calls(*spans: tuple[int, int]) -> list[Interval]:
    return [Interval(start, end) for start, end in spans]


# --- hand-computed tables --------------------------------------------------------------

# A: [0, 10 s)  B: [2 s, 6 s)  C: [4 s, 8 s)  D: [6 s, 7 s) (answered as B ends)
#   n(t): 0-2 s: 1, 2-4 s: 2, 4-6 s: 3, 6-7 s: 3 (B out, D in), 7-8 s: 2, 8-10 s: 1
ABCD = calls((0, 10 * S), (2 * S, 6 * S), (4 * S, 8 * S), (6 * S, 7 * S))


def test_given_four_calls_when_profiled_then_steps_match_hand_table() -> None:
    # the end of B and the answer of D at 6 s net out: no step there
    assert concurrency_profile(ABCD) == [
        (0, 1), (2 * S, 2), (4 * S, 3), (7 * S, 2), (8 * S, 1), (10 * S, 0),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("package", "start", "end", "expected_us"),
    [
        # above 0: every channel-second, 10 + 4 + 4 + 1 = 19 s
        (0, 0, 10 * S, 19 * S),
        # above 1: 2-4 s: 1, 4-7 s: 2, 7-8 s: 1 -> 2 + 6 + 1 = 9 s
        (1, 0, 10 * S, 9 * S),
        # above 2: 4-7 s: 1 -> 3 s
        (2, 0, 10 * S, 3 * S),
        (3, 0, 10 * S, 0),
        (9, 0, 10 * S, 0),
        # clipped to [5 s, 7.5 s) above 1: 5-7 s: 2, 7-7.5 s: 1 -> 4.5 s
        (1, 5 * S, 7 * S + S // 2, 4 * S + S // 2),
        # a window outside every call
        (0, 20 * S, 30 * S, 0),
        # an empty window
        (0, 3 * S, 3 * S, 0),
    ],
)
def test_given_four_calls_when_overage_computed_then_equals_hand_table(
    package: int, start: int, end: int, expected_us: int
) -> None:
    assert overage_us(ABCD, package, start, end) == expected_us


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, 3),
        (0, 2 * S, 1),
        (0, 2 * S + 1, 2),  # the first microsecond of B counts
        (7 * S, 10 * S, 2),
        (8 * S, 10 * S, 1),
        (10 * S, 20 * S, 0),  # A ends at 10 s: not in progress at 10 s
    ],
)
def test_given_four_calls_when_peak_taken_then_equals_hand_table(
    start: int | None, end: int | None, expected: int
) -> None:
    assert peak(ABCD, start, end) == expected


def test_given_call_ending_when_another_answered_at_same_microsecond_then_no_overlap() -> None:
    back_to_back = calls((0, 5 * S), (5 * S, 9 * S))
    assert peak(back_to_back) == 1
    assert overage_us(back_to_back, 0, 0, 9 * S) == 9 * S
    assert overage_us(back_to_back, 1, 0, 9 * S) == 0
    # one microsecond of overlap is one channel-microsecond of overage
    assert overage_us(calls((0, 5 * S + 1), (5 * S, 9 * S)), 1, 0, 9 * S) == 1


def test_given_empty_and_zero_length_calls_then_nothing_counted() -> None:
    assert peak([]) == 0
    assert concurrency_profile([]) == []
    instant = calls((3 * S, 3 * S), (3 * S, 3 * S))
    assert peak(instant) == 0
    assert overage_us(instant, 0, 0, 10 * S) == 0
    assert concurrency_profile(instant) == []


# 2026-03-08 is the US spring-forward day: 23 hours long in America/New_York
NY_DAYS = day_cuts(
    "America/New_York",
    to_us(datetime(2026, 3, 7, 5, 0, tzinfo=UTC)),  # 2026-03-07 00:00 EST
    to_us(datetime(2026, 3, 10, 4, 0, tzinfo=UTC)),  # 2026-03-10 00:00 EDT
)


def test_given_dst_change_when_days_cut_then_local_midnights() -> None:
    days = NY_DAYS
    assert days == [
        (date(2026, 3, 7), to_us(datetime(2026, 3, 7, 5, 0, tzinfo=UTC))),
        (date(2026, 3, 8), to_us(datetime(2026, 3, 8, 5, 0, tzinfo=UTC))),
        (date(2026, 3, 9), to_us(datetime(2026, 3, 9, 4, 0, tzinfo=UTC))),  # EDT from here
    ]


def test_given_calls_across_local_midnight_when_daily_peaks_then_each_day_its_own() -> None:
    tz = "America/New_York"
    start, end = NY_DAYS[0][1], to_us(datetime(2026, 3, 10, 4, 0, tzinfo=UTC))
    mar8, mar9 = NY_DAYS[1][1], NY_DAYS[2][1]
    spans = calls(
        (mar8 - 60 * S, mar8 + 60 * S),  # across the midnight of 7 -> 8 March
        (mar8 - 30 * S, mar8 - 10 * S),  # 7 March only: 2 at once there
        (mar8 + 10 * S, mar8 + 20 * S),  # 8 March: 2 at once
        (mar8 + 15 * S, mar8 + 25 * S),  # 8 March: 3 at once
        (mar9, mar9 + S),  # 9 March from its first microsecond (EDT midnight = 04:00 UTC)
    )
    assert daily_peaks(spans, tz, start, end) == {
        date(2026, 3, 7): 2,
        date(2026, 3, 8): 3,
        date(2026, 3, 9): 1,
    }
    # the same calls by UTC days: those around 05:00 UTC all fall on 8 March
    assert daily_peaks(spans, "UTC", start, end) == {
        date(2026, 3, 7): 0,
        date(2026, 3, 8): 3,
        date(2026, 3, 9): 1,
        date(2026, 3, 10): 0,
    }


@pytest.mark.parametrize(
    ("overage", "price", "expected"),
    [
        (60 * S, Decimal("0.05"), Decimal("0.050000")),  # one channel-minute
        (9_602_790, Decimal("0.01"), Decimal("0.001601")),  # 0.0016004650 rounded UP
        (1, Decimal("0.000001"), Decimal("0.000001")),  # a sliver still costs 10^-6
        (0, Decimal("5"), Decimal("0.000000")),
        (120 * S, Decimal("0"), Decimal("0.000000")),
        (90 * S, Decimal("0.0123456789"), Decimal("0.018519")),  # 0.01851851835 UP
    ],
)
def test_given_overage_when_priced_then_rounded_up_to_six_decimals(
    overage: int, price: Decimal, expected: Decimal
) -> None:
    cost = overage_cost(overage, price)
    assert cost == expected
    assert cost.as_tuple().exponent == -6


def test_given_microseconds_when_as_seconds_then_exact_decimal() -> None:
    assert us_to_seconds(9_602_790) == Decimal("9.602790")
    assert str(us_to_seconds(1)) == "0.000001"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Interval(5, 4), "ends before it starts"),
        (lambda: Interval(1.5, 4), "start_us must be an int"),  # type: ignore[arg-type]
        (lambda: overage_us(ABCD, -1, 0, 1), "package must be >= 0"),
        (lambda: overage_us(ABCD, 0, 10, 5), "window ends before it starts"),
        (lambda: overage_cost(5, 0.5), "must be a Decimal"),  # type: ignore[arg-type]
        (lambda: overage_cost(5, Decimal("-1")), "must be >= 0"),
        (lambda: daily_peaks(ABCD, "Mars/Olympus", 0, S), "unknown time zone 'Mars/Olympus'"),
        (lambda: ConcurrencySweep(0, [5]), "at least 2 increasing"),
    ],
)
def test_given_bad_input_then_error_names_it(call: object, message: str) -> None:
    with pytest.raises(ConcurrencyError, match=message):
        call()  # type: ignore[operator]


def test_given_intervals_out_of_order_when_swept_then_refused() -> None:
    sweep = ConcurrencySweep(0, [0, 100])
    sweep.add(Interval(10, 20))
    with pytest.raises(ConcurrencyError, match="sorted by start"):
        sweep.add(Interval(5, 30))


# --- properties ------------------------------------------------------------------------

HORIZON = 120  # small microsecond values: a brute-force oracle can walk every instant
spans = st.tuples(st.integers(0, HORIZON), st.integers(0, 40)).map(
    lambda pair: Interval(pair[0], pair[0] + pair[1])
)
interval_lists = st.lists(spans, max_size=25)
packages = st.integers(0, 8)
windows = st.tuples(st.integers(-10, HORIZON + 50), st.integers(0, HORIZON + 60)).map(
    lambda pair: (pair[0], pair[0] + pair[1])
)


def level(intervals: list[Interval], t: int) -> int:
    return sum(1 for i in intervals if i.start_us <= t < i.end_us)


@given(interval_lists, packages, windows)
def test_property_overage_and_peak_equal_brute_force(
    intervals: list[Interval], package: int, window: tuple[int, int]
) -> None:
    start, end = window
    levels = [level(intervals, t) for t in range(start, end)]
    assert overage_us(intervals, package, start, end) == sum(max(0, n - package) for n in levels)
    assert peak(intervals, start, end) == max(levels, default=0)


@given(interval_lists)
def test_property_profile_equals_brute_force(intervals: list[Interval]) -> None:
    steps = concurrency_profile(intervals)
    for t in range(-1, HORIZON + 45):
        before = [n for at, n in steps if at <= t]
        assert (before[-1] if before else 0) == level(intervals, t)


@given(interval_lists, interval_lists, packages, windows)
def test_property_overage_monotonic_in_intervals(
    intervals: list[Interval], more: list[Interval], package: int, window: tuple[int, int]
) -> None:
    start, end = window
    assert overage_us(intervals + more, package, start, end) >= overage_us(
        intervals, package, start, end
    )


@given(interval_lists, st.integers(0, 8), windows)
def test_property_no_overage_when_package_covers_peak(
    intervals: list[Interval], extra: int, window: tuple[int, int]
) -> None:
    start, end = window
    assert overage_us(intervals, peak(intervals, start, end) + extra, start, end) == 0


@given(interval_lists, windows)
def test_property_package_zero_overage_is_sum_of_clipped_durations(
    intervals: list[Interval], window: tuple[int, int]
) -> None:
    start, end = window
    clipped = sum(max(0, min(i.end_us, end) - max(i.start_us, start)) for i in intervals)
    assert overage_us(intervals, 0, start, end) == clipped


@given(interval_lists, packages, st.lists(st.integers(-10, HORIZON + 60), min_size=2, max_size=6))
def test_property_clipping_additive_over_split_periods(
    intervals: list[Interval], package: int, points: list[int]
) -> None:
    cuts = sorted(points)
    whole = overage_us(intervals, package, cuts[0], cuts[-1])
    parts = [overage_us(intervals, package, a, b) for a, b in pairwise(cuts)]
    assert sum(parts) == whole
    peaks = [peak(intervals, a, b) for a, b in pairwise(cuts)]
    assert max(peaks) == peak(intervals, cuts[0], cuts[-1])


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(st.integers(0, 4 * 86_400), st.integers(0, 30_000)).map(
            lambda pair: Interval(pair[0] * S, (pair[0] + pair[1]) * S)
        ),
        max_size=20,
    ),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]),
)
def test_property_daily_peaks_are_peaks_of_local_days(intervals: list[Interval], tz: str) -> None:
    start, end = 0, 5 * 86_400 * S
    days = day_cuts(tz, start, end)
    found = daily_peaks(intervals, tz, start, end)
    assert list(found) == [day for day, _at in days]
    bounds = [at for _day, at in days] + [end]
    for (day, _at), low, high in zip(days, bounds, bounds[1:], strict=False):
        assert found[day] == peak(intervals, low, high)
    assert max(found.values()) == peak(intervals, start, end)


@given(interval_lists, packages, st.lists(st.integers(-10, HORIZON + 60), min_size=2, max_size=6))
def test_property_one_sweep_over_many_segments_equals_each_segment_alone(
    intervals: list[Interval], package: int, points: list[int]
) -> None:
    cuts = sorted(set(points))
    if len(cuts) < 2:
        return
    sweep = ConcurrencySweep(package, cuts)
    for interval in sorted(intervals, key=lambda item: item.start_us):
        sweep.add(interval)
    segments = sweep.finish()
    assert [(s.start_us, s.end_us) for s in segments] == list(pairwise(cuts))
    for segment in segments:
        low, high = segment.start_us, segment.end_us
        assert segment.overage_us == overage_us(intervals, package, low, high)
        assert segment.peak == peak(intervals, low, high)
