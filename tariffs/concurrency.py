"""Concurrency packages, measured: peak concurrency and overage channel-seconds (pure).

**Definition.** At any instant ``t``, ``n(t)`` is the number of the account's answered
calls in progress: those with ``answered_at <= t < ended_at`` (exact epoch microseconds,
``rated_calls.answered_at_us`` / ``ended_at_us``). A call is the half-open
:class:`Interval` ``[start_us, end_us)``: a call ending at ``t`` and one answered at ``t``
do not overlap.

- **Peak** over a window ``[start, end)`` = ``max n(t)`` for ``t`` in it (0 without calls).
- **Overage** over a window, for a package of ``package`` channels = the integral of
  ``max(0, n(t) - package) dt`` over the window, in exact integer microseconds (every
  channel-second above the package, clipped to the window). Clipping is additive: the
  overage of ``[a, c)`` is the overage of ``[a, b)`` plus that of ``[b, c)``.
- **Cost** of an overage = ``overage_us / 60_000_000 * price_per_minute`` (the price of
  one channel-minute above the package), computed exactly and rounded UP to 10^-6
  (:func:`overage_cost`; :func:`tariffs.money.to_micros` gives its micro-units).
- **Daily peaks**: the peak of each local day (calendar day in time zone ``tz``) that
  overlaps the window, each day clipped to the window; days without calls have peak 0.

:class:`ConcurrencySweep` computes peaks and overage per segment between cut points in
one pass over intervals sorted by start, keeping only the calls in progress (memory in
the peak concurrency, not in the number of calls): what ``balance.concurrency_usage``
streams a month of rated calls through. The functions below wrap it for lists.

Errors::

    ConcurrencyError   INVALID_CONCURRENCY_INPUT  a bad interval, window, package or price
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from math import ceil
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tariffs.money import MICRO, MICROS_PER_UNIT

US_PER_MINUTE = 60_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ConcurrencyError(ValueError):
    """An invalid interval, window, package or price (the message names it)."""

    code = "INVALID_CONCURRENCY_INPUT"


def _check_int(field: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConcurrencyError(f"{field} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConcurrencyError(f"{field} must be >= {minimum}, got {value!r}")
    return value


def _check_window(start_us: int, end_us: int) -> None:
    _check_int("start_us", start_us)
    _check_int("end_us", end_us)
    if end_us < start_us:
        raise ConcurrencyError(f"window ends before it starts: [{start_us}, {end_us})")


@dataclass(frozen=True, slots=True)
class Interval:
    """One answered call, ``[start_us, end_us)`` in epoch microseconds (may be empty)."""

    start_us: int
    end_us: int

    def __post_init__(self) -> None:
        _check_int("start_us", self.start_us)
        _check_int("end_us", self.end_us)
        if self.end_us < self.start_us:
            raise ConcurrencyError(f"interval ends before it starts: {self!r}")


@dataclass(frozen=True, slots=True)
class Segment:
    """The peak and overage of one segment ``[start_us, end_us)`` of a sweep."""

    start_us: int
    end_us: int
    peak: int
    overage_us: int


class ConcurrencySweep:
    """Peak and overage per segment between ``cuts``, from intervals fed by start time.

    ``cuts`` are increasing epoch microseconds ``b0 < b1 < ... < bk``: segment ``i`` is
    ``[b_i, b_{i+1})``; time outside ``[b0, bk)`` is ignored. Feed every interval with
    :meth:`add` in non-decreasing ``start_us`` order, then call :meth:`finish` once.
    """

    def __init__(self, package: int, cuts: Sequence[int]) -> None:
        self._package = _check_int("package", package, minimum=0)
        self._cuts = [_check_int("cut", cut) for cut in cuts]
        if len(self._cuts) < 2 or any(a >= b for a, b in pairwise(self._cuts)):
            raise ConcurrencyError(f"cuts must be at least 2 increasing instants: {cuts!r}")
        segments = len(self._cuts) - 1
        self._peaks = [0] * segments
        self._overage = [0] * segments
        self._ends: list[int] = []  # min-heap of the ends of the calls in progress
        self._now: int | None = None  # time swept so far
        self._level = 0  # n(t) from self._now on
        self._finished = False

    def add(self, interval: Interval) -> None:
        """Feed one call; ``interval.start_us`` must not precede the previous one's."""
        if self._finished:
            raise ConcurrencyError("the sweep is finished: no interval can be added")
        if self._now is not None and interval.start_us < self._now:
            raise ConcurrencyError(
                f"intervals must come sorted by start: {interval!r} after {self._now}"
            )
        self._advance(interval.start_us)
        if interval.end_us > interval.start_us:
            heapq.heappush(self._ends, interval.end_us)
            self._level += 1

    def finish(self) -> list[Segment]:
        """End the sweep (every call ends): the segments, in time order."""
        if not self._finished:
            while self._ends:
                self._advance(self._ends[0])
            self._finished = True
        return [
            Segment(self._cuts[i], self._cuts[i + 1], self._peaks[i], self._overage[i])
            for i in range(len(self._peaks))
        ]

    def _advance(self, to_us: int) -> None:
        """Sweep time up to ``to_us``, ending every call whose end is at or before it."""
        while self._ends and self._ends[0] <= to_us:
            end = heapq.heappop(self._ends)
            self._hold(end)
            self._level -= 1
        self._hold(to_us)

    def _hold(self, until_us: int) -> None:
        """Record the current level over ``[now, until_us)``, then move now there."""
        since, self._now = self._now, until_us
        if since is None or self._level == 0 or until_us <= since:
            return
        cuts = self._cuts
        low, high = max(since, cuts[0]), min(until_us, cuts[-1])
        if low >= high:
            return
        above = max(0, self._level - self._package)
        index = bisect_right(cuts, low) - 1
        while index < len(self._peaks) and cuts[index] < high:
            if self._level > self._peaks[index]:
                self._peaks[index] = self._level
            if above:
                span = min(high, cuts[index + 1]) - max(low, cuts[index])
                self._overage[index] += above * span
            index += 1


def _sweep(intervals: Iterable[Interval], package: int, cuts: Sequence[int]) -> list[Segment]:
    sweep = ConcurrencySweep(package, cuts)
    for interval in sorted(intervals, key=lambda item: item.start_us):
        sweep.add(interval)
    return sweep.finish()


def concurrency_profile(intervals: Iterable[Interval]) -> list[tuple[int, int]]:
    """``n(t)`` as steps ``(at_us, n)``: ``n`` holds from ``at_us`` to the next step.

    Only instants where ``n`` changes appear; the last step is back to 0 (an empty list
    without calls). Ends and answers at one instant net out (they do not overlap).
    """
    deltas: dict[int, int] = {}
    for interval in intervals:
        if interval.end_us > interval.start_us:
            deltas[interval.start_us] = deltas.get(interval.start_us, 0) + 1
            deltas[interval.end_us] = deltas.get(interval.end_us, 0) - 1
    steps: list[tuple[int, int]] = []
    level = 0
    for at in sorted(deltas):
        if deltas[at]:
            level += deltas[at]
            steps.append((at, level))
    return steps


def peak(
    intervals: Iterable[Interval], start_us: int | None = None, end_us: int | None = None
) -> int:
    """``max n(t)`` over ``[start_us, end_us)`` (an open side: unbounded)."""
    if start_us is not None and end_us is not None:
        _check_window(start_us, end_us)
    calls = list(intervals)
    if not calls:
        return 0
    low = min(c.start_us for c in calls) if start_us is None else start_us
    high = max(c.end_us for c in calls) if end_us is None else end_us
    if low >= high:
        return 0
    return _sweep(calls, 0, [low, high])[0].peak


def overage_us(intervals: Iterable[Interval], package: int, start_us: int, end_us: int) -> int:
    """Channel-microseconds above ``package`` concurrent calls within ``[start_us, end_us)``."""
    _check_int("package", package, minimum=0)
    _check_window(start_us, end_us)
    if start_us == end_us:
        return 0
    return _sweep(intervals, package, [start_us, end_us])[0].overage_us


def zone(tz: str) -> ZoneInfo:
    """The time zone named ``tz``; ``ConcurrencyError`` naming it when unknown."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConcurrencyError(f"unknown time zone {tz!r}") from exc


def to_us(moment: datetime) -> int:
    """An aware datetime in epoch microseconds."""
    if moment.utcoffset() is None:
        raise ConcurrencyError(f"a naive time {moment!r} (give its zone)")
    return (moment - _EPOCH) // _MICROSECOND


def from_us(epoch_us: int, tz: str = "UTC") -> datetime:
    """Epoch microseconds as an aware datetime in zone ``tz``."""
    return (_EPOCH + timedelta(microseconds=epoch_us)).astimezone(zone(tz))


def day_cuts(tz: str, start_us: int, end_us: int) -> list[tuple[date, int]]:
    """The local days (zone ``tz``) overlapping ``[start_us, end_us)``, each with the
    instant its part of the window starts; the window's end is not listed."""
    _check_window(start_us, end_us)
    local = zone(tz)
    if start_us == end_us:
        return []
    day = from_us(start_us, tz).date()
    cuts = [(day, start_us)]
    while True:
        day += timedelta(days=1)
        midnight = to_us(datetime(day.year, day.month, day.day, tzinfo=local))
        if midnight >= end_us:
            return cuts
        cuts.append((day, midnight))


def daily_peaks(
    intervals: Iterable[Interval], tz: str, start_us: int, end_us: int
) -> dict[date, int]:
    """The peak of every local day in zone ``tz`` overlapping ``[start_us, end_us)``."""
    days = day_cuts(tz, start_us, end_us)
    if not days:
        return {}
    segments = _sweep(intervals, 0, [at for _day, at in days] + [end_us])
    return {day: segment.peak for (day, _at), segment in zip(days, segments, strict=True)}


def us_to_seconds(micros: int) -> Decimal:
    """Microseconds as exact Decimal seconds (6 decimals)."""
    _check_int("microseconds", micros)
    return Decimal(micros).scaleb(-6).quantize(MICRO)


def overage_cost(overage_us: int, price_per_minute: Decimal) -> Decimal:
    """The price of ``overage_us`` channel-microseconds at ``price_per_minute`` per
    channel-minute, exact, rounded UP to 6 decimals."""
    _check_int("overage_us", overage_us, minimum=0)
    if isinstance(price_per_minute, float) or not isinstance(price_per_minute, Decimal):
        raise ConcurrencyError(f"price_per_minute must be a Decimal, got {price_per_minute!r}")
    if not price_per_minute.is_finite() or price_per_minute < 0:
        raise ConcurrencyError(f"price_per_minute must be >= 0, got {price_per_minute}")
    exact = Fraction(overage_us) * Fraction(price_per_minute) / US_PER_MINUTE
    return Decimal(ceil(exact * MICROS_PER_UNIT)).scaleb(-6).quantize(MICRO)
