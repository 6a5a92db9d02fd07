"""The pure rating engine: deck rules + rate + duration -> charge. No I/O, all exact.

Billable time follows the rate's increments (``initial_increment`` then
``subsequent_increment`` seconds, every started increment counts, fractions of a second
included) after applying ``minimum_duration``; an unanswered call (duration <= 0) is free.
A call's cost is ``connect_fee + rate * billable / 60``, rounded once to the deck's
``decimals`` with its rounding (``up`` = ceiling, ``half_up``, ``down``).

Arithmetic is done in exact integers (prices are in micro-units, at most 6 decimals),
so rounding never depends on a Decimal context; :func:`max_usage` is closed-form.

Errors::

    ValueError
    └── RatingError   code INVALID_RATING_INPUT (a float, NaN, a rate with more than
                      6 decimals or a zero increment reaching the engine)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from tariffs.deck import DeckInfo, Rate, Rounding

FREE_CALL_USAGE = 86_400
"""``max_usage`` of an affordable call whose per-minute rate is 0 when no limit is given."""

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


def _whole_seconds(duration: Decimal | int) -> int:
    """``ceil(duration)`` as an int: a started second counts (3.504 -> 4)."""
    if isinstance(duration, bool) or not isinstance(duration, Decimal | int):
        raise RatingError(f"duration must be a Decimal, not {type(duration).__name__}")
    if isinstance(duration, int):
        return duration
    if not duration.is_finite():
        raise RatingError(f"duration is not finite: {duration}")
    return int(duration.to_integral_value(rounding=ROUND_CEILING))


def _increments(rate: Rate) -> tuple[int, int]:
    initial, subsequent = rate.initial_increment, rate.subsequent_increment
    if initial <= 0 or subsequent <= 0:
        raise RatingError(
            f"prefix {rate.prefix!r}: increments must be positive, not {initial}/{subsequent}"
        )
    return initial, subsequent


def _billable(rate: Rate, seconds: int) -> int:
    """Billable seconds of an answered call lasting ``seconds`` whole seconds."""
    if seconds <= 0:
        return 0
    initial, subsequent = _increments(rate)
    seconds = max(seconds, rate.minimum_duration)
    if seconds <= initial:
        return initial
    return initial + -(-(seconds - initial) // subsequent) * subsequent


def billable_seconds(rate: Rate, duration: Decimal | int) -> int:
    """Seconds billed for a call of ``duration`` seconds (0 when unanswered)."""
    return _billable(rate, _whole_seconds(duration))


def _micros(name: str, rate: Rate, value: Decimal) -> int:
    """An exact price in micro-units; more than 6 decimals is refused, never rounded."""
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise RatingError(f"prefix {rate.prefix!r}: {name} is not a valid price: {value!r}")
    scaled = value.scaleb(_MICROS)
    micros = int(scaled)
    if micros != scaled:
        raise RatingError(f"prefix {rate.prefix!r}: {name} has more than 6 decimals: {value}")
    return micros


def _check_decimals(info: DeckInfo) -> int:
    decimals = info.decimals
    if not 0 <= decimals <= _MICROS:
        raise RatingError(f"deck {info.name!r}: decimals must be 0..6, not {decimals}")
    return decimals


def _cost_units(info: DeckInfo, rate: Rate, billable: int) -> int:
    """The rounded cost of ``billable`` seconds in units of 10^-decimals (billable > 0)."""
    decimals = _check_decimals(info)
    # exact value in units of 10^-6 / 60, divided by the size of one output unit
    numerator = _micros("connect_fee", rate, rate.connect_fee) * 60 + (
        _micros("rate", rate, rate.rate) * billable
    )
    denominator = _UNIT_SIZE[decimals]
    quotient, remainder = divmod(numerator, denominator)
    if info.rounding is Rounding.UP:
        return quotient + (remainder > 0)
    if info.rounding is Rounding.HALF_UP:
        return quotient + (2 * remainder >= denominator)
    return quotient


def _to_decimal(units: int, info: DeckInfo) -> Decimal:
    return Decimal(units).scaleb(-info.decimals)


def call_cost(info: DeckInfo, rate: Rate, duration: Decimal | int) -> Decimal:
    """The cost of a call of ``duration`` seconds, rounded to the deck's decimals."""
    billable = billable_seconds(rate, duration)
    if billable == 0:
        return _to_decimal(0, info)
    return _to_decimal(_cost_units(info, rate, billable), info)


def cost_of_first(info: DeckInfo, rate: Rate, seconds: int) -> Decimal:
    """The cost of the first ``seconds`` of a call (a reservation slice)."""
    return call_cost(info, rate, seconds)


def rate_call(info: DeckInfo, rate: Rate, duration: Decimal | int) -> Charge:
    """Rate one finished call: its cost, billable seconds, rate, deck and currency."""
    billable = billable_seconds(rate, duration)
    units = _cost_units(info, rate, billable) if billable else 0
    return Charge(
        cost=_to_decimal(units, info),
        billable_seconds=billable,
        rate=rate,
        deck=info.name,
        currency=info.currency,
    )


def _max_billable(info: DeckInfo, rate: Rate, credit_units: int) -> int | None:
    """The largest billable b with cost(b) <= credit, None when unbounded (rate 0).

    With cost units ``c(b) = round((F + R*b) / D)`` and ``C`` the credit floored to
    units: UP needs ``F + R*b <= C*D``; DOWN needs ``F + R*b < (C+1)*D``; HALF_UP
    needs ``2*(F + R*b) < (2C+1)*D``. Each solves for b with one floor division.
    """
    decimals = _check_decimals(info)
    fee = _micros("connect_fee", rate, rate.connect_fee) * 60
    per_second = _micros("rate", rate, rate.rate)
    denominator = _UNIT_SIZE[decimals]
    if info.rounding is Rounding.UP:
        budget, factor = credit_units * denominator - fee, 1
    elif info.rounding is Rounding.DOWN:
        budget, factor = (credit_units + 1) * denominator - fee - 1, 1
    else:
        budget, factor = (2 * credit_units + 1) * denominator - 2 * fee - 1, 2
    if budget < 0:
        return -1
    if per_second == 0:
        return None
    return budget // (factor * per_second)


def max_usage(info: DeckInfo, rate: Rate, credit: Decimal, limit: int | None = None) -> int:
    """The longest call (whole seconds) whose cost stays within ``credit``.

    The answer is at an increment boundary (a call of that length costs at most
    ``credit``, one more increment would not), or 0 when not even the first billable
    block is affordable. ``limit`` caps the answer; an affordable free rate (0 per
    minute) with no limit gets :data:`FREE_CALL_USAGE`.
    """
    if not isinstance(credit, Decimal) or not credit.is_finite():
        raise RatingError(f"credit must be a finite Decimal, not {credit!r}")
    if limit is not None and limit < 0:
        raise RatingError(f"limit must not be negative: {limit}")
    if credit < 0:
        return 0
    initial, subsequent = _increments(rate)
    credit_units = int(credit.scaleb(info.decimals).to_integral_value(rounding=ROUND_FLOOR))
    first = _billable(rate, 1)  # the first billable block (minimum duration included)
    best = _max_billable(info, rate, credit_units)
    if best is None:
        return limit if limit is not None else max(FREE_CALL_USAGE, first)
    if best < first:
        return 0
    seconds = initial + (best - initial) // subsequent * subsequent
    # the closed form is exact integer arithmetic; the adjustment below checks it
    # against call_cost itself and moves by whole increments (it never loops in practice)
    while seconds >= first and call_cost(info, rate, seconds) > credit:
        seconds -= subsequent
    if seconds < first:
        return 0
    while call_cost(info, rate, seconds + subsequent) <= credit:
        seconds += subsequent
    return seconds if limit is None else min(seconds, limit)
