"""The pure rating engine: deck rules + rate + duration -> charge. No I/O, all exact.

An answered call of ``duration`` seconds (a started second counts: 3.504 -> 4) is first
raised to the rate's ``minimum_duration``. It is then cut by the rate's intervals
(:attr:`tariffs.deck.Rate.rate_intervals`), as CGRateS does: the part of the call in
interval ``i`` (from its ``start`` to the next interval's start) is billed rounded UP to
that interval's ``increment``, at its per-minute ``rate``; the next interval still
begins at its own start. Billable seconds are the sum of the billed parts.

The cost is ``connect_fee + sum(rate_i * billed_i / 60)``, raised to ``min_cost`` and
capped at ``max_cost`` (a capped call goes on free), then rounded ONCE to the deck's
``decimals`` with its rounding (``up`` = ceiling, ``half_up``, ``down``). An unanswered
call (duration <= 0) is free: no connect fee, no minimum.

Arithmetic is done in exact integers (prices are in micro-units, at most 6 decimals),
so rounding never depends on a Decimal context; :func:`max_usage` is closed-form (one
step per interval). A rate is compiled to integers once (a cache of the last 65,536
distinct rates: a rate is an immutable value).

Errors::

    ValueError
    └── RatingError   code INVALID_RATING_INPUT (a float, NaN, a price with more than
                      6 decimals, a zero increment or a malformed interval list)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from tariffs.deck import DeckInfo, Rate, Rounding

FREE_CALL_USAGE = 86_400
"""``max_usage`` of an affordable call with no price per minute (free, or capped by its
``max_cost``) when no limit is given."""

_MICROS = 6
_UNIT_SIZE: tuple[int, ...] = tuple(60 * 10**exponent for exponent in range(_MICROS, -1, -1))
"""60 * 10^(6 - decimals): the size of one output unit in units of 10^-6 / 60."""


class RatingError(ValueError):
    """Input the engine refuses (it names the field and value)."""

    code = "INVALID_RATING_INPUT"


@dataclass(frozen=True, slots=True)
class Charge:
    """The rated result of one call."""

    cost: Decimal
    billable_seconds: int
    rate: Rate
    deck: str
    currency: str


@dataclass(frozen=True, slots=True)
class _Step:
    """One interval in integers: [start, end) seconds, micro-units per minute, increment."""

    start: int
    end: int | None  # None: the last interval, open
    per_minute: int
    increment: int


def _whole_seconds(duration: Decimal | int) -> int:
    """``ceil(duration)`` as an int: a started second counts (3.504 -> 4)."""
    if isinstance(duration, bool) or not isinstance(duration, Decimal | int):
        raise RatingError(f"duration must be a Decimal, not {type(duration).__name__}")
    if isinstance(duration, int):
        return duration
    if not duration.is_finite():
        raise RatingError(f"duration is not finite: {duration}")
    return int(duration.to_integral_value(rounding=ROUND_CEILING))


def _micros(name: str, rate: Rate, value: Decimal) -> int:
    """An exact price in micro-units; more than 6 decimals is refused, never rounded."""
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise RatingError(f"prefix {rate.prefix!r}: {name} is not a valid price: {value!r}")
    scaled = value.scaleb(_MICROS)
    micros = int(scaled)
    if micros != scaled:
        raise RatingError(f"prefix {rate.prefix!r}: {name} has more than 6 decimals: {value}")
    return micros


def _steps(rate: Rate) -> tuple[_Step, ...]:
    """The rate's intervals in integers, checked (start 0, increasing, increments > 0)."""
    if not rate.intervals:  # the classic pair, without building RateInterval objects
        initial, subsequent = rate.initial_increment, rate.subsequent_increment
        if initial <= 0 or subsequent <= 0:
            raise RatingError(
                f"prefix {rate.prefix!r}: increments must be positive, not {initial}/{subsequent}"
            )
        per_minute = _micros("rate", rate, rate.rate)
        return (
            _Step(0, initial, per_minute, initial),
            _Step(initial, None, per_minute, subsequent),
        )
    intervals = rate.intervals
    steps: list[_Step] = []
    for number, interval in enumerate(intervals):
        end = intervals[number + 1].start if number + 1 < len(intervals) else None
        if (number == 0 and interval.start != 0) or (end is not None and end <= interval.start):
            raise RatingError(
                f"prefix {rate.prefix!r}: intervals must start at 0 and increase: "
                f"{[i.start for i in intervals]}"
            )
        if interval.increment <= 0:
            raise RatingError(
                f"prefix {rate.prefix!r}: increments must be positive, not {interval.increment}"
            )
        per_minute = _micros(f"interval {number + 1} rate", rate, interval.rate)
        steps.append(_Step(interval.start, end, per_minute, interval.increment))
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A rate in exact integers, compiled once per distinct rate (prices in 10^-6 / 60)."""

    steps: tuple[_Step, ...]
    fee: int
    low: int
    high: int | None
    minimum: int


@functools.lru_cache(maxsize=65536)
def _plan(rate: Rate) -> _Plan:
    """The rate's plan; a bad rate raises :class:`RatingError` (and is not cached)."""
    if rate.minimum_duration < 0:
        raise RatingError(f"prefix {rate.prefix!r}: minimum_duration is negative")
    low = _micros("min_cost", rate, rate.min_cost) * 60
    high = None if rate.max_cost is None else _micros("max_cost", rate, rate.max_cost) * 60
    fee = _micros("connect_fee", rate, rate.connect_fee) * 60
    return _Plan(_steps(rate), fee, low, high, rate.minimum_duration)


def _ceil_to(seconds: int, increment: int) -> int:
    return -(-seconds // increment) * increment


def _billed(plan: _Plan, seconds: int) -> list[tuple[_Step, int]]:
    """(interval, billed seconds) of an answered call lasting ``seconds`` whole seconds."""
    if seconds <= 0:
        return []
    seconds = max(seconds, plan.minimum)
    billed: list[tuple[_Step, int]] = []
    for step in plan.steps:
        if seconds <= step.start:
            break
        part = seconds - step.start if step.end is None else min(seconds, step.end) - step.start
        billed.append((step, _ceil_to(part, step.increment)))
    return billed


def billable_seconds(rate: Rate, duration: Decimal | int) -> int:
    """Seconds billed for a call of ``duration`` seconds (0 when unanswered)."""
    return sum(seconds for _, seconds in _billed(_plan(rate), _whole_seconds(duration)))


def _check_decimals(info: DeckInfo) -> int:
    decimals = info.decimals
    if not 0 <= decimals <= _MICROS:
        raise RatingError(f"deck {info.name!r}: decimals must be 0..6, not {decimals}")
    return decimals


def _round(info: DeckInfo, numerator: int) -> int:
    """``numerator`` (units of 10^-6 / 60) rounded to units of 10^-decimals."""
    denominator = _UNIT_SIZE[_check_decimals(info)]
    quotient, remainder = divmod(numerator, denominator)
    if info.rounding is Rounding.UP:
        return quotient + (remainder > 0)
    if info.rounding is Rounding.HALF_UP:
        return quotient + (2 * remainder >= denominator)
    return quotient


def _rate_units(info: DeckInfo, rate: Rate, seconds: int) -> tuple[int, int]:
    """(rounded cost in units of 10^-decimals, billable seconds) of ``seconds`` of talk."""
    plan = _plan(rate)
    billed = _billed(plan, seconds)
    if not billed:
        return 0, 0
    exact, billable = plan.fee, 0
    for step, part in billed:
        exact += step.per_minute * part
        billable += part
    exact = max(exact, plan.low)
    if plan.high is not None and exact > plan.high:
        exact = plan.high
    return _round(info, exact), billable


def _to_decimal(units: int, info: DeckInfo) -> Decimal:
    return Decimal(units).scaleb(-info.decimals)


def call_cost(info: DeckInfo, rate: Rate, duration: Decimal | int) -> Decimal:
    """The cost of a call of ``duration`` seconds, rounded to the deck's decimals."""
    units, _ = _rate_units(info, rate, _whole_seconds(duration))
    return _to_decimal(units, info)


def cost_of_first(info: DeckInfo, rate: Rate, seconds: int) -> Decimal:
    """The cost of the first ``seconds`` of a call (a reservation slice)."""
    return call_cost(info, rate, seconds)


def rate_call(info: DeckInfo, rate: Rate, duration: Decimal | int) -> Charge:
    """Rate one finished call: its cost, billable seconds, rate, deck and currency."""
    units, billable = _rate_units(info, rate, _whole_seconds(duration))
    return Charge(
        cost=_to_decimal(units, info),
        billable_seconds=billable,
        rate=rate,
        deck=info.name,
        currency=info.currency,
    )


def _threshold(info: DeckInfo, credit_units: int) -> int:
    """The largest exact cost (units of 10^-6 / 60) that rounds to at most ``credit_units``.

    With ``D`` the size of one output unit: UP needs ``N <= C*D``; DOWN needs
    ``N < (C+1)*D``; HALF_UP needs ``2*N < (2C+1)*D``.
    """
    denominator = _UNIT_SIZE[_check_decimals(info)]
    if info.rounding is Rounding.UP:
        return credit_units * denominator
    if info.rounding is Rounding.DOWN:
        return (credit_units + 1) * denominator - 1
    return ((2 * credit_units + 1) * denominator - 1) // 2


def _longest_within(steps: tuple[_Step, ...], fee: int, budget: int) -> int | None:
    """The longest call (seconds, at an increment boundary) whose exact cost <= ``budget``.

    ``fee + cost of intervals`` is flat within one increment: inside interval ``i`` the
    answer is ``start_i + k * increment_i`` with ``k = (budget - base_i) // (price of one
    increment)``; when ``k`` reaches the interval's end the whole interval is affordable
    and the search goes on in the next one. None: unbounded (a free last interval).
    """
    base, seconds = fee, 0
    if base > budget:
        return 0
    for step in steps:
        block = step.per_minute * step.increment
        count = None if block == 0 else (budget - base) // block
        if step.end is None:
            return None if count is None else step.start + count * step.increment
        length = step.end - step.start
        if count is None or count * step.increment >= length:
            seconds = step.end
            base += step.per_minute * _ceil_to(length, step.increment)
            continue
        return max(seconds, step.start + count * step.increment)
    return seconds  # pragma: no cover - the last step is open


def cost_micros(info: DeckInfo, rate: Rate, seconds: int) -> int:
    """``call_cost`` of ``seconds`` in micro-units (exact: a deck has at most 6 decimals)."""
    return int(call_cost(info, rate, seconds).scaleb(6))


def max_usage_micros(
    info: DeckInfo,
    rate: Rate,
    credit_micros: int,
    limit: int,
    limit_cost_micros: int | None = None,
) -> int:
    """``max_usage(info, rate, credit, limit)`` of a credit in micro-units.

    The authorization path's form: when the credit pays for a whole call of ``limit``
    seconds (one integer compare against that call's cost, ``limit_cost_micros`` when
    the caller keeps it), the answer is ``limit`` at once, without the search in
    ``Decimal``; else ``max_usage``.
    """
    if limit >= max(1, rate.minimum_duration):
        if limit_cost_micros is None:
            limit_cost_micros = cost_micros(info, rate, limit)
        if credit_micros >= limit_cost_micros:
            return limit
    return max_usage(info, rate, Decimal(credit_micros).scaleb(-6), limit=limit)


def max_usage(info: DeckInfo, rate: Rate, credit: Decimal, limit: int | None = None) -> int:
    """The longest call (whole seconds) whose cost stays within ``credit``.

    The answer is at an increment (or interval) boundary: a call of that length costs at
    most ``credit``, one second more would not; 0 when not even the first billable block
    is affordable. ``limit`` caps the answer. A call that cannot cost more than
    ``credit`` (a free rate, or a ``max_cost`` within the credit) gets ``limit``, or
    :data:`FREE_CALL_USAGE` when no limit is given.
    """
    if not isinstance(credit, Decimal) or not credit.is_finite():
        raise RatingError(f"credit must be a finite Decimal, not {credit!r}")
    if limit is not None and limit < 0:
        raise RatingError(f"limit must not be negative: {limit}")
    if credit < 0:
        return 0
    plan = _plan(rate)
    low, high = plan.low, plan.high
    credit_units = int(credit.scaleb(info.decimals).to_integral_value(rounding=ROUND_FLOOR))
    budget = _threshold(info, credit_units)
    first = sum(part for _, part in _billed(plan, 1))  # the first billable block
    if low > budget:
        return 0
    unbounded = high is not None and high <= budget
    seconds = None if unbounded else _longest_within(plan.steps, plan.fee, budget)
    if seconds is None:
        return limit if limit is not None else max(FREE_CALL_USAGE, first)
    if seconds < max(1, rate.minimum_duration):
        return 0
    return seconds if limit is None else min(seconds, limit)
