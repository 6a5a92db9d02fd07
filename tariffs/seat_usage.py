"""Seat usage of a period: peak concurrent seats, seat-days and seat-seconds (pure).

Input: seat presence intervals ``[start_us, end_us)`` in epoch microseconds (one per seat
session, ``balance.seat_sessions``), a period ``[period_start_us, period_end_us)`` and the
tenant's time zone. Every interval is clipped to the period first, then the intervals of
ONE seat are merged (a person present on two switches, or sessions touching end to
start, is one seat), so:

- ``peak_seats``: the most seats present at one instant (a sweep line; intervals are
  half-open, so a logout at t and a login at t do not overlap);
- ``seat_days``: distinct (seat, local calendar day in ``tz``) pairs with presence, a
  presence being a positive-length part of the seat's time inside that day;
- ``seat_seconds``: the seats' total presence in the period, in whole seconds (the sum
  of microseconds, rounded down once).

Zero-length intervals (a refused login) are no presence at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class SeatInterval:
    """One seat present from ``start_us`` (included) to ``end_us`` (excluded)."""

    seat: str
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class SeatUsage:
    """A tenant's seat usage over one period."""

    peak_seats: int
    seat_days: int
    seat_seconds: int


def presence_by_seat(
    intervals: Iterable[SeatInterval], period_start_us: int, period_end_us: int
) -> dict[str, list[tuple[int, int]]]:
    """Each seat's presence inside the period: sorted, disjoint, non-touching intervals."""
    if period_end_us < period_start_us:
        raise ValueError(f"period ends before it starts: [{period_start_us}, {period_end_us})")
    clipped: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for item in intervals:
        start, end = max(item.start_us, period_start_us), min(item.end_us, period_end_us)
        if start < end:
            clipped[item.seat].append((start, end))
    merged: dict[str, list[tuple[int, int]]] = {}
    for seat, spans in clipped.items():
        spans.sort()
        out = [spans[0]]
        for start, end in spans[1:]:
            last_start, last_end = out[-1]
            if start <= last_end:
                out[-1] = (last_start, max(last_end, end))
            else:
                out.append((start, end))
        merged[seat] = out
    return merged


def peak_seats(presence: dict[str, list[tuple[int, int]]]) -> int:
    """The most seats present at one instant (ends at t sort before starts at t)."""
    edges = sorted(
        (moment, step)
        for spans in presence.values()
        for start, end in spans
        for moment, step in ((start, 1), (end, -1))
    )
    peak = current = 0
    for _moment, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def seat_days(presence: dict[str, list[tuple[int, int]]], tz: str) -> int:
    """Distinct (seat, local calendar day) pairs with a positive-length presence."""
    zone = ZoneInfo(tz)
    total = 0
    for spans in presence.values():
        days: list[tuple[int, int]] = [
            (_local_day(start, zone).toordinal(), _local_day(end - 1, zone).toordinal())
            for start, end in spans
        ]
        last = None
        for first, final in days:  # sorted by start, so by first day
            if last is not None and first <= last:
                first = last + 1
            if first <= final:
                total += final - first + 1
            last = final if last is None else max(last, final)
    return total


def seat_seconds(presence: dict[str, list[tuple[int, int]]]) -> int:
    """Total presence of every seat, in whole seconds (rounded down once)."""
    micros = sum(end - start for spans in presence.values() for start, end in spans)
    return micros // _MICROS_PER_SECOND


def seat_usage(
    intervals: Iterable[SeatInterval], period_start_us: int, period_end_us: int, tz: str
) -> SeatUsage:
    """Peak seats, seat-days (in ``tz``) and seat-seconds of the period."""
    presence = presence_by_seat(intervals, period_start_us, period_end_us)
    return SeatUsage(peak_seats(presence), seat_days(presence, tz), seat_seconds(presence))


def _local_day(moment_us: int, zone: ZoneInfo) -> date:
    return (_EPOCH + timedelta(microseconds=moment_us)).astimezone(zone).date()
