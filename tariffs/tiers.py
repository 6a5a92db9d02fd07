"""Volume tiers (pure): an account's usage this period lowers its per-minute prices.

A :class:`TierPlan` counts the account's answered ``calls`` or billed ``minutes`` in a
**period** (the calendar month in the account's time zone, :func:`period_of`; a call
belongs to the month it STARTED in) and has ordered tiers ``(threshold, discount)``:
from ``threshold`` calls (or minutes) used in the period on, the deck's per-minute
prices are ``discount`` percent lower. A discount, not a price, so one plan serves every
destination of the deck (a tier never turns a cheap destination into a dear one) and a
tiered price is never above the deck's: thresholds increase and so do discounts.

What a discount changes: the per-minute price of every interval of the rate, rounded
DOWN to the micro-unit (``rate * (10000 - basis_points) // 10000`` in micro-units). The
connect fee, minimum duration, increments, ``min_cost`` and ``max_cost`` are the deck's.

Modes:

- ``all_units``: the whole next call is priced at the tier the counter has reached when
  the call starts (:func:`tiered_rate`): "past 100,000 minutes this month, the next
  call costs 20 % less". Calls already rated are never repriced.
- ``graduated`` (:func:`graduated_cost`): a call's billed seconds are placed at their
  position in the period: second ``k`` of the call (``k = 0, 1, ...``, counting the
  billable seconds after increments and minimum duration) is unit ``used + k`` of the
  period, and is priced with the discount of the tier that unit falls in. With a
  ``minutes`` counter a threshold of ``T`` minutes is the boundary at unit ``60 * T``
  seconds, so a call crossing it is split to the second, even inside an increment. With
  a ``calls`` counter a call is one unit and cannot be split: call number ``used + 1``
  takes the tier of ``used``, which is what ``all_units`` does.

Both modes reach a tier at the same moment: when the counter (calls answered, or
billable seconds) is at least the threshold (times 60 for minutes). The pricing itself
is :func:`positional_cost`: one pass over the billed seconds of the call, each priced by
the interval it is in and the discount of its position; bundled seconds
(``tariffs.bundles``) are the same pass with the first seconds free.

Errors::

    ValueError
    └── PlanError              code INVALID_PLAN     (also tariffs.bundles)
        └── InvalidTierPlan    code INVALID_TIER_PLAN (names the field)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tariffs.deck import DeckInfo, Rate, RateInterval, Rounding
from tariffs.rating import FREE_CALL_USAGE, RatingError

PERIOD_MONTH = "month"
PERIODS = (PERIOD_MONTH,)
BASIS_POINTS = 10_000  # 100 %
MAX_DISCOUNT_DECIMALS = 2  # stored as basis points
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MICROS = 6
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class PlanError(ValueError):
    """Base of the plan errors (tiers and bundles), with a stable ``code``."""

    code = "INVALID_PLAN"


class InvalidTierPlan(PlanError):
    """A tier plan field with an invalid value; ``field`` names it."""

    code = "INVALID_TIER_PLAN"

    def __init__(self, plan: str, field: str, message: str) -> None:
        super().__init__(f"tier plan {plan!r} {field}: {message}")
        self.field = field


class TierCounter(StrEnum):
    """What a tier plan counts in a period."""

    CALLS = "calls"  # answered calls
    MINUTES = "minutes"  # billable seconds (thresholds in minutes)


class TierMode(StrEnum):
    """How a tier applies to a call."""

    GRADUATED = "graduated"
    ALL_UNITS = "all_units"


@dataclass(frozen=True, slots=True)
class Tier:
    """From ``threshold`` calls (or minutes) used in the period: ``discount`` % off."""

    threshold: int
    discount: Decimal  # percent, 0..100, at most 2 decimals

    @property
    def basis_points(self) -> int:
        """The discount in basis points (12.5 % -> 1250)."""
        return int(self.discount.scaleb(MAX_DISCOUNT_DECIMALS))


@dataclass(frozen=True, slots=True)
class Usage:
    """An account's counters in one period: answered calls and billable seconds."""

    calls: int = 0
    seconds: int = 0


@dataclass(frozen=True, slots=True)
class TierPlan:
    """Volume tiers of one account: a counter, a mode and ordered tiers (validated)."""

    name: str
    counter: TierCounter
    mode: TierMode
    tiers: tuple[Tier, ...]
    period: str = PERIOD_MONTH

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidTierPlan(str(name), "name", "1-64 letters, digits, '_', '.' or '-'")
        for field, kind in (("counter", TierCounter), ("mode", TierMode)):
            value = getattr(self, field)
            if value not in {member.value for member in kind}:
                raise InvalidTierPlan(name, field, f"one of {[m.value for m in kind]}: {value!r}")
            object.__setattr__(self, field, kind(value))
        if self.period not in PERIODS:
            raise InvalidTierPlan(name, "period", f"one of {list(PERIODS)}: {self.period!r}")
        object.__setattr__(self, "tiers", tuple(self.tiers))
        _check_tiers(name, self.tiers)

    def units(self, usage: Usage) -> int:
        """The counter's position: calls, or billable seconds for a minutes counter."""
        return usage.calls if self.counter is TierCounter.CALLS else usage.seconds

    def start_of(self, tier: Tier) -> int:
        """The counter position at which ``tier`` applies (seconds for minutes)."""
        return tier.threshold * (60 if self.counter is TierCounter.MINUTES else 1)


def _check_tiers(name: str, tiers: Sequence[Tier]) -> None:
    if not tiers:
        raise InvalidTierPlan(name, "tiers", "at least one tier is needed")
    previous: Tier | None = None
    for number, tier in enumerate(tiers, start=1):
        field = f"tier {number}"
        threshold, discount = tier.threshold, tier.discount
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise InvalidTierPlan(name, field, f"threshold must be an int >= 0: {threshold!r}")
        if not isinstance(discount, Decimal) or not discount.is_finite():
            raise InvalidTierPlan(name, field, f"discount must be a Decimal: {discount!r}")
        if not 0 <= discount <= 100:
            raise InvalidTierPlan(name, field, f"discount must be 0..100 %: {discount}")
        if discount != discount.quantize(Decimal(1).scaleb(-MAX_DISCOUNT_DECIMALS)):
            raise InvalidTierPlan(name, field, f"discount has more than 2 decimals: {discount}")
        if previous is not None:
            if threshold <= previous.threshold:
                raise InvalidTierPlan(name, field, "thresholds must increase")
            if discount < previous.discount:
                raise InvalidTierPlan(name, field, "a higher tier must not cost more")
        previous = tier


# --- periods -------------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise PlanError(f"unknown time zone {tz!r}") from exc


def period_of(at: datetime, tz: str = "UTC") -> str:
    """The period (``YYYY-MM``, the calendar month in zone ``tz``) of a call starting at ``at``."""
    if at.utcoffset() is None:
        raise PlanError(f"a naive time {at!r} (use UTC)")
    local = at.astimezone(_zone(tz))
    return f"{local.year:04d}-{local.month:02d}"


def period_bounds(period: str, tz: str = "UTC") -> tuple[datetime, datetime]:
    """The period's first instant and the next period's first instant, in UTC."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", period)
    if match is None or not 1 <= int(match[2]) <= 12:
        raise PlanError(f"a period is YYYY-MM, not {period!r}")
    year, month = int(match[1]), int(match[2])
    zone = _zone(tz)
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def period_bounds_us(period: str, tz: str = "UTC") -> tuple[int, int]:
    """:func:`period_bounds` in epoch microseconds (``[start, end)``, as rated calls store)."""
    start, end = period_bounds(period, tz)
    return (start - _EPOCH) // _MICROSECOND, (end - _EPOCH) // _MICROSECOND


# --- tiers -------------------------------------------------------------------------


def tier_at(plan: TierPlan, usage: Usage) -> Tier | None:
    """The tier reached by ``usage`` (the highest whose start it is at or past), or None."""
    reached: Tier | None = None
    position = plan.units(usage)
    for tier in plan.tiers:
        if position >= plan.start_of(tier):
            reached = tier
    return reached


def discount_at(plan: TierPlan, usage: Usage) -> Decimal:
    """The discount (percent) of the next unit after ``usage``; 0 before the first tier."""
    tier = tier_at(plan, usage)
    return Decimal(0) if tier is None else tier.discount


def _discounted_micros(per_minute_micros: int, basis_points: int) -> int:
    return per_minute_micros * (BASIS_POINTS - basis_points) // BASIS_POINTS


def discounted_rate(rate: Rate, discount: Decimal) -> Rate:
    """``rate`` with every per-minute price ``discount`` % lower (rounded down to 10^-6)."""
    if discount == 0:
        return rate
    points = int(discount.scaleb(MAX_DISCOUNT_DECIMALS))

    def lower(price: Decimal) -> Decimal:
        return Decimal(_discounted_micros(_micros(rate, price), points)).scaleb(-_MICROS)

    if not rate.intervals:
        return replace(rate, rate=lower(rate.rate))
    intervals = tuple(
        RateInterval(i.start, lower(i.rate), i.increment) for i in rate.intervals
    )
    return replace(rate, rate=intervals[0].rate, intervals=intervals)


def tiered_rate(plan: TierPlan, usage: Usage, base_rate: Rate) -> Rate:
    """The rate of the NEXT call of an account whose counters are ``usage``.

    For ``all_units`` it prices the whole call; for ``graduated`` it is the price of the
    call's first second (later seconds may cost less: :func:`graduated_cost`), so it is
    what a reservation may safely assume.
    """
    return discounted_rate(base_rate, discount_at(plan, usage))


def discount_schedule(plan: TierPlan, usage: Usage) -> tuple[tuple[int, int], ...]:
    """Where the discount changes inside the next call: ``(billed second, basis points)``.

    One step at 0 for ``all_units`` and for a ``calls`` counter; for ``graduated``
    minutes one more step for each tier the call would cross.
    """
    start = (0, tier_at(plan, usage))
    steps = [(0, 0 if start[1] is None else start[1].basis_points)]
    if plan.mode is TierMode.GRADUATED and plan.counter is TierCounter.MINUTES:
        used = usage.seconds
        steps += [
            (plan.start_of(tier) - used, tier.basis_points)
            for tier in plan.tiers
            if plan.start_of(tier) > used
        ]
    return tuple(steps)


def graduated_cost(
    info: DeckInfo, plan: TierPlan, usage: Usage, base_rate: Rate, duration: Decimal | int
) -> Decimal:
    """The cost of a call of ``duration`` s under ``plan`` for an account at ``usage``.

    Works for both modes (``all_units`` is a schedule with one step).
    """
    return positional_cost(info, base_rate, duration, discount_schedule(plan, usage)).cost


# --- the positional pricing pass ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PositionalCost:
    """A call priced second by billed second: cost, billable and free (bundled) seconds."""

    cost: Decimal
    billable_seconds: int
    free_seconds: int


def whole_seconds(duration: Decimal | int) -> int:
    """``ceil(duration)``: a started second counts (the engine's rule)."""
    if isinstance(duration, bool) or not isinstance(duration, Decimal | int):
        raise RatingError(f"duration must be a Decimal, not {type(duration).__name__}")
    if isinstance(duration, int):
        return duration
    if not duration.is_finite():
        raise RatingError(f"duration is not finite: {duration}")
    return int(duration.to_integral_value(rounding=ROUND_CEILING))


def _micros(rate: Rate, value: Decimal) -> int:
    scaled = value.scaleb(_MICROS) if isinstance(value, Decimal) else None
    if scaled is None or not scaled.is_finite() or scaled < 0 or scaled != int(scaled):
        raise RatingError(f"prefix {rate.prefix!r}: not a price of at most 6 decimals: {value!r}")
    return int(scaled)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rate in integers: intervals ``(start, end or None, micro-units/min, increment)``,
    and fee, minimum and maximum cost in units of 10^-6 / 60."""

    intervals: tuple[tuple[int, int | None, int, int], ...]
    minimum: int
    fee: int
    low: int
    high: int | None


@functools.lru_cache(maxsize=65536)
def _compiled(rate: Rate) -> _Compiled:
    given = rate.rate_intervals
    intervals = []
    for number, interval in enumerate(given):
        if interval.increment <= 0:
            raise RatingError(f"prefix {rate.prefix!r}: increments must be positive")
        end = given[number + 1].start if number + 1 < len(given) else None
        intervals.append((interval.start, end, _micros(rate, interval.rate), interval.increment))
    high = None if rate.max_cost is None else _micros(rate, rate.max_cost) * 60
    return _Compiled(
        tuple(intervals),
        rate.minimum_duration,
        _micros(rate, rate.connect_fee) * 60,
        _micros(rate, rate.min_cost) * 60,
        high,
    )


def _parts(compiled: _Compiled, seconds: int) -> list[tuple[int, int]]:
    if seconds <= 0:
        return []
    seconds = max(seconds, compiled.minimum)
    parts: list[tuple[int, int]] = []
    for start, end, per_minute, increment in compiled.intervals:
        if seconds <= start:
            break
        part = seconds - start if end is None else min(seconds, end) - start
        parts.append((per_minute, -(-part // increment) * increment))
    return parts


def billed_parts(rate: Rate, seconds: int) -> list[tuple[int, int]]:
    """``(price per minute in micro-units, billed seconds)`` of each interval of a call.

    The engine's cut (``tariffs.rating``): raised to the minimum duration, each interval's
    part rounded up to its increment; the parts follow each other in billed seconds.
    """
    return _parts(_compiled(rate), seconds)


def _round_units(info: DeckInfo, numerator: int) -> int:
    """``numerator`` (units of 10^-6 / 60) rounded once to units of 10^-decimals."""
    if not 0 <= info.decimals <= _MICROS:
        raise RatingError(f"deck {info.name!r}: decimals must be 0..6, not {info.decimals}")
    denominator = 60 * 10 ** (_MICROS - info.decimals)
    quotient, remainder = divmod(numerator, denominator)
    if info.rounding is Rounding.UP:
        quotient += remainder > 0
    elif info.rounding is Rounding.HALF_UP:
        quotient += 2 * remainder >= denominator
    return int(quotient)


def _round(info: DeckInfo, numerator: int) -> Decimal:
    return Decimal(_round_units(info, numerator)).scaleb(-info.decimals)


Steps = list[tuple[int, int]]  # (from billed second, discount in basis points)


def _steps(discounts: Sequence[tuple[int, int]]) -> Steps:
    """Discount steps sorted, starting at billed second 0."""
    steps = sorted((max(0, start), points) for start, points in discounts) or [(0, 0)]
    if steps[0][0] > 0:
        steps.insert(0, (0, 0))
    return steps


def _exact(
    compiled: _Compiled, seconds: int, steps: Steps, free_seconds: int
) -> tuple[int, int, int]:
    """(exact cost in 10^-6 / 60, billable seconds, free seconds used) of a call."""
    parts = _parts(compiled, seconds)
    if not parts:
        return 0, 0, 0
    billable = sum(part for _, part in parts)
    free = max(0, min(free_seconds, billable))
    exact, position = compiled.fee, 0
    for per_minute, part in parts:
        exact += _part_cost(per_minute, position, position + part, free, steps)
        position += part
    if free == 0:
        exact = max(exact, compiled.low)
    if compiled.high is not None:
        exact = min(exact, compiled.high)
    return exact, billable, free


def positional_cost(
    info: DeckInfo,
    rate: Rate,
    duration: Decimal | int,
    discounts: Sequence[tuple[int, int]] = (),
    free_seconds: int = 0,
) -> PositionalCost:
    """Price a call's billed seconds by position: free first, then by ``discounts``.

    Billed second ``k`` (0-based, in the order the intervals bill them) is free when
    ``k < free_seconds``; else it costs its interval's per-minute price / 60, lowered by
    the discount (basis points) of the last ``discounts`` step starting at or before
    ``k``. The cost is ``connect_fee + sum``, raised to ``min_cost`` only when no second
    was free, capped at ``max_cost``, rounded once as the deck says. Without free seconds
    and discounts this is exactly ``tariffs.rating.call_cost``. An unanswered call
    (duration <= 0) costs nothing.
    """
    exact, billable, free = _exact(
        _compiled(rate), whole_seconds(duration), _steps(discounts), free_seconds
    )
    return PositionalCost(_round(info, exact), billable, free)


def _part_cost(
    per_minute: int, start: int, end: int, free: int, steps: Sequence[tuple[int, int]]
) -> int:
    """Cost (10^-6 / 60) of billed seconds ``[start, end)`` at ``per_minute``."""
    start = max(start, free)
    total = 0
    for number, (step_start, points) in enumerate(steps):
        step_end = steps[number + 1][0] if number + 1 < len(steps) else None
        low = max(start, step_start)
        high = end if step_end is None else min(end, step_end)
        if high > low:
            total += _discounted_micros(per_minute, points) * (high - low)
    return total


def positional_max_usage(
    info: DeckInfo,
    rate: Rate,
    credit: Decimal,
    discounts: Sequence[tuple[int, int]] = (),
    free_seconds: int = 0,
    limit: int | None = None,
) -> int:
    """The longest call (whole seconds) whose :func:`positional_cost` stays within ``credit``.

    The cost never falls as a call gets longer, so this is a binary search up to
    ``limit`` (:data:`tariffs.rating.FREE_CALL_USAGE` when None); 0 when not even the
    first second is affordable.
    """
    if not isinstance(credit, Decimal) or not credit.is_finite():
        raise RatingError(f"credit must be a finite Decimal, not {credit!r}")
    high = FREE_CALL_USAGE if limit is None else limit
    if credit < 0 or high <= 0:
        return 0

    compiled, steps = _compiled(rate), _steps(discounts)
    budget = int(credit.scaleb(info.decimals).to_integral_value(rounding=ROUND_FLOOR))

    def affordable(seconds: int) -> bool:
        return _round_units(info, _exact(compiled, seconds, steps, free_seconds)[0]) <= budget

    if not affordable(1):
        return 0
    low = 1
    if affordable(high):
        return high
    while high - low > 1:  # affordable(low) and not affordable(high)
        middle = (low + high) // 2
        if affordable(middle):
            low = middle
        else:
            high = middle
    return low
