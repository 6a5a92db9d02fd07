"""The rules a rate deck obeys, as lists of problems (shared by code, CSV and SQL).

Nothing here raises: every function returns what is wrong, so the CSV importer can list
every bad line and :class:`tariffs.ratedeck.RateDeck` can raise on the first problem.

A rate: digits-only prefix; prices (``rate``, ``connect_fee``, interval rates,
``min_cost``, ``max_cost``) are Decimals >= 0 with at most 6 decimals, and ``min_cost``
/ ``max_cost`` with at most the deck's ``decimals``; ``max_cost`` >= ``min_cost`` and
>= ``connect_fee``; increments are whole seconds > 0, ``minimum_duration`` >= 0;
intervals start at 0 and strictly increase, and the classic fields agree with them
(see :meth:`tariffs.deck.Rate.from_intervals`); the effective window is made of aware
datetimes with ``effective_from < effective_to``; ``band`` is "" or a band of the deck.

A deck: a name, a known rounding, 0..6 decimals, an ISO 4217 currency
(:mod:`tariffs.currencies`), valid band rows that never overlap; no two rates of one
prefix and band whose effective windows overlap (the same window twice is a duplicate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tariffs.bands import (
    band_name_problem,
    band_overlaps,
    band_row_problems,
    format_clock,
    format_days,
)
from tariffs.currencies import is_known_currency
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.prefix_index import is_valid_prefix

MAX_PRICE_DECIMALS = 6
MAX_PRICE = Decimal(9_000_000_000)
"""The largest price: 9e15 micro-units, exact in a Lua double (2^53 ~ 9.007e15)."""
_STEPS = tuple(Decimal(1).scaleb(-decimals) for decimals in range(MAX_PRICE_DECIMALS + 1))

DUPLICATE = "DUPLICATE_PREFIX"
OVERLAP = "OVERLAPPING_RATES"
INVALID = "INVALID_RATE"


@dataclass(frozen=True, slots=True)
class RateProblem:
    """One problem of the rate at ``index`` (``field`` None: the rate as a whole)."""

    index: int
    field: str | None
    message: str
    code: str = INVALID


def price_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid price (Decimal, finite, >= 0, <= 6 decimals), or None."""
    if not isinstance(value, Decimal):
        return f"{name} must be a Decimal, not {type(value).__name__}"
    if not value.is_finite():
        return f"{name} is not a finite number: {value}"
    if value < 0:
        return f"{name} must not be negative: {value}"
    if value > MAX_PRICE:
        return f"{name} is too large: {value}"
    if value.quantize(_STEPS[MAX_PRICE_DECIMALS]) != value:
        return f"{name} has more than {MAX_PRICE_DECIMALS} decimals: {value}"
    return None


def seconds_problem(name: str, value: object, *, allow_zero: bool) -> str | None:
    """Why ``value`` is not a valid whole number of seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be a whole number of seconds, not {value!r}"
    if value < 0 or (value == 0 and not allow_zero):
        bound = "negative" if allow_zero else "zero or negative"
        return f"{name} must not be {bound}: {value}"
    return None


def _cost_bound_problem(name: str, value: object, decimals: int) -> str | None:
    problem = price_problem(name, value)
    if (
        problem is None
        and isinstance(value, Decimal)
        and value.quantize(_STEPS[decimals]) != value
    ):
        return f"{name} has more decimals than the deck's {decimals}: {value}"
    return problem


def _interval_problems(rate: Rate) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    previous: int | None = None
    for number, interval in enumerate(rate.intervals, start=1):
        where = f"interval {number}"
        start = interval.start
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            problems.append(("intervals", f"{where}: start must be whole seconds >= 0: {start!r}"))
        elif previous is None and start != 0:
            problems.append(("intervals", f"{where}: the first interval must start at 0: {start}"))
        elif previous is not None and start <= previous:
            problems.append(("intervals", f"{where}: starts must increase: {start} <= {previous}"))
        else:
            previous = start
        for problem in (
            price_problem(f"{where} rate", interval.rate),
            seconds_problem(f"{where} increment", interval.increment, allow_zero=False),
        ):
            if problem:
                problems.append(("intervals", problem))
    if rate.intervals and not problems:
        first, last = rate.intervals[0], rate.intervals[-1]
        summary = (first.rate, first.increment, last.increment)
        if (rate.rate, rate.initial_increment, rate.subsequent_increment) != summary:
            problems.append(
                (
                    "rate",
                    "rate/initial_increment/subsequent_increment disagree with the intervals "
                    "(build the rate with Rate.from_intervals)",
                )
            )
    return problems


def _window_problems(rate: Rate) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name in ("effective_from", "effective_to"):
        value = getattr(rate, name)
        if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
            problems.append((name, f"{name} must be an aware datetime (UTC), not {value!r}"))
    start, end = rate.effective_from, rate.effective_to
    if not problems and start is not None and end is not None and not start < end:
        problems.append(("effective_to", f"effective_to {end} is not after effective_from {start}"))
    return problems


def rate_field_problems(
    rate: Rate, decimals: int = MAX_PRICE_DECIMALS
) -> list[tuple[str, str]]:
    """Every (field, reason) why ``rate`` alone is invalid in a deck of ``decimals``."""
    problems: list[tuple[str, str]] = []
    if not is_valid_prefix(rate.prefix):
        problems.append(
            ("prefix", f"prefix must be ASCII digits only, without '+': {rate.prefix!r}")
        )
    for field, problem in (
        ("rate", price_problem("rate", rate.rate)),
        ("connect_fee", price_problem("connect_fee", rate.connect_fee)),
        ("initial_increment", _positive("initial_increment", rate.initial_increment)),
        ("subsequent_increment", _positive("subsequent_increment", rate.subsequent_increment)),
    ):
        if problem:
            problems.append((field, problem))
    if type(rate.minimum_duration) is not int or rate.minimum_duration != 0:
        problem = seconds_problem("minimum_duration", rate.minimum_duration, allow_zero=True)
        if problem:
            problems.append(("minimum_duration", problem))
    if rate.min_cost or not isinstance(rate.min_cost, Decimal):
        problem = _cost_bound_problem("min_cost", rate.min_cost, decimals)
        if problem:
            problems.append(("min_cost", problem))
    if rate.max_cost is not None:
        problems.extend(_max_cost_problems(rate, decimals, problems))
    if not isinstance(rate.intervals, tuple):
        problems.append(("intervals", f"intervals must be a tuple, not {rate.intervals!r}"))
    elif rate.intervals:
        problems.extend(_interval_problems(rate))
    if rate.effective_from is not None or rate.effective_to is not None:
        problems.extend(_window_problems(rate))
    if rate.band != "":
        problem = band_name_problem(rate.band)
        if problem:
            problems.append(("band", problem))
    return problems


def _positive(name: str, value: object) -> str | None:
    if type(value) is int and value > 0:  # the common case, quickly
        return None
    return seconds_problem(name, value, allow_zero=False)


def _max_cost_problems(
    rate: Rate, decimals: int, found: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    assert rate.max_cost is not None
    problem = _cost_bound_problem("max_cost", rate.max_cost, decimals)
    if problem:
        return [("max_cost", problem)]
    fields = {field for field, _ in found}
    if "min_cost" not in fields and rate.max_cost < rate.min_cost:
        return [("max_cost", f"max_cost {rate.max_cost} is below min_cost")]
    if "connect_fee" not in fields and rate.max_cost < rate.connect_fee:
        return [("max_cost", f"max_cost {rate.max_cost} is below the connect_fee")]
    return []


def rate_problems(rate: Rate, decimals: int = MAX_PRICE_DECIMALS) -> list[str]:
    """Every reason why ``rate`` alone is invalid (an empty list when it is valid)."""
    return [message for _, message in rate_field_problems(rate, decimals)]


def info_problems(info: DeckInfo) -> list[str]:
    """Every reason why a deck's name, currency, rounding or decimals are invalid."""
    problems: list[str] = []
    if not isinstance(info.name, str) or not info.name.strip():
        problems.append("deck name must not be empty")
    if not isinstance(info.rounding, Rounding):
        problems.append(f"unknown rounding {info.rounding!r}")
    if isinstance(info.decimals, bool) or not isinstance(info.decimals, int) or not (
        0 <= info.decimals <= MAX_PRICE_DECIMALS
    ):
        problems.append(f"decimals must be 0..{MAX_PRICE_DECIMALS}, not {info.decimals!r}")
    if not is_known_currency(info.currency):
        problems.append(f"unknown currency {info.currency!r} (ISO 4217 code expected)")
    return problems


def _default_row(index: int) -> str:
    return f"row {index + 1}"


def band_problems(
    info: DeckInfo, describe: Callable[[int], str] = _default_row
) -> list[tuple[int, str]]:
    """(row index, reason) of every bad band row of the deck, overlaps included.

    ``describe(index)`` names another row in a message ("line 3" for the CSV importer).
    """
    problems = [
        (index, problem)
        for index, band in enumerate(info.bands)
        for problem in band_row_problems(band)
    ]
    for later, earlier in band_overlaps(info.bands):
        first = info.bands[earlier]
        problems.append(
            (
                later,
                f"band {info.bands[later].name!r} overlaps band {first.name!r} "
                f"({format_days(first.weekdays)} {format_clock(first.start)}-"
                f"{format_clock(first.end)}) on {describe(earlier)}",
            )
        )
    return sorted(problems, key=lambda item: item[0])


def _default_describe(index: int) -> str:
    return f"rate {index + 1}"


def deck_problems(
    info: DeckInfo,
    rates: Sequence[Rate],
    describe: Callable[[int], str] = _default_describe,
) -> list[RateProblem]:
    """Every problem of the rates, alone and together, in rate order.

    ``describe(index)`` names another rate in a message ("line 7" for the CSV importer).
    """
    decimals = info.decimals
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
        decimals = MAX_PRICE_DECIMALS  # reported by info_problems
    known_bands = {band.name for band in info.bands}
    problems: list[RateProblem] = []
    first_of: dict[tuple[str, str], int] = {}
    groups: dict[tuple[str, str], list[int]] = {}
    for index, rate in enumerate(rates):
        for field, message in rate_field_problems(rate, decimals):
            problems.append(RateProblem(index, field, message))
        if rate.band and rate.band not in known_bands and band_name_problem(rate.band) is None:
            problems.append(RateProblem(index, "band", f"unknown band {rate.band!r}"))
        key = (rate.prefix, rate.band)
        first = first_of.setdefault(key, index)
        if first != index:
            groups.setdefault(key, [first]).append(index)
    for members in groups.values():
        problems.extend(_overlaps(rates, members, describe))
    problems.sort(key=lambda problem: problem.index)
    return problems


def _window_key(rate: Rate) -> tuple[int, datetime | None]:
    start = rate.effective_from
    return (0, None) if start is None else (1, start)


def _overlaps(
    rates: Sequence[Rate], members: list[int], describe: Callable[[int], str]
) -> list[RateProblem]:
    """Problems of rates of one prefix and band whose windows overlap (sweep by start)."""
    valid = [i for i in members if not _window_problems(rates[i])]
    ordered = sorted(valid, key=lambda i: (_window_key(rates[i]), i))
    problems: list[RateProblem] = []
    reach: datetime | None = None  # the furthest end seen so far (None: open)
    holder: int | None = None
    for index in ordered:
        rate = rates[index]
        start = rate.effective_from
        if holder is not None and (reach is None or start is None or start < reach):
            later, earlier = max(index, holder), min(index, holder)
            other = rates[holder]
            same = (other.effective_from, other.effective_to) == (start, rate.effective_to)
            where = f" in band {rate.band!r}" if rate.band else ""
            if same:
                message = f"duplicate prefix {rate.prefix!r}{where} (first on {describe(earlier)})"
            else:
                message = (
                    f"effective window of prefix {rate.prefix!r}{where} overlaps "
                    f"{describe(earlier)}"
                )
            problems.append(
                RateProblem(later, "prefix", message, DUPLICATE if same else OVERLAP)
            )
        end = rate.effective_to
        if holder is None or (reach is not None and (end is None or end > reach)):
            reach, holder = end, index
    return problems
