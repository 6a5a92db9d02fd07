"""A validated, indexed rate deck: ``RateDeck(info, rates).match(number, at, tz) -> Rate``.

The rules (:mod:`tariffs.deck_rules`) are shared with the CSV importer, so a deck built
in code and a deck read from a file obey the same ones; the constructor raises on the
first broken rule.

Matching a call that starts at ``at`` for an account in time zone ``tz``: the longest
prefix of the number that has a rate IN FORCE at ``at`` wins; among the rates of that
prefix, the one limited to the band holding ``at`` (local time in ``tz``) beats the
one for any time (band ""), and a rate applies only when ``at`` is in its effective
window. A prefix whose rates are all out of force (a rate scheduled for next month, a
band with no rate of its own) falls back to the next shorter prefix, so a scheduled
new prefix starts to win on its ``effective_from`` and not a second before.
``at=None`` means now: for a deck without bands or windows the answer is the same at
any time (today's behaviour, and no clock is read).

Errors::

    ValueError
    └── DeckError                 code INVALID_DECK      (bad DeckInfo: name, currency,
        │                                                  rounding, decimals, bands)
        ├── InvalidRateError      code INVALID_RATE      (names the prefix and every problem)
        ├── DuplicateRateError    code DUPLICATE_PREFIX  (same prefix, band and window)
        ├── OverlappingRateError  code OVERLAPPING_RATES (same prefix and band, windows meet)
        └── DeckImportError       code DECK_IMPORT       (tariffs.csv_deck, every bad line)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from tariffs.bands import BandCalendar, local_time
from tariffs.deck import DeckInfo, Rate
from tariffs.deck_rules import (
    DUPLICATE,
    MAX_PRICE_DECIMALS,
    OVERLAP,
    band_problems,
    deck_problems,
    info_problems,
    price_problem,
    rate_problems,
    seconds_problem,
)
from tariffs.prefix_index import PrefixIndex

__all__ = [
    "MAX_PRICE_DECIMALS",
    "DeckError",
    "DuplicateRateError",
    "InvalidRateError",
    "OverlappingRateError",
    "RateDeck",
    "check_info",
    "price_problem",
    "rate_problems",
    "seconds_problem",
]


class DeckError(ValueError):
    """Base of the rate deck errors, with a stable ``code``."""

    code = "INVALID_DECK"


class InvalidRateError(DeckError):
    """A rate that breaks the deck rules; ``prefix`` names it, ``problems`` lists why."""

    code = "INVALID_RATE"

    def __init__(self, prefix: str, problems: Sequence[str]) -> None:
        super().__init__(f"invalid rate for prefix {prefix!r}: {'; '.join(problems)}")
        self.prefix = prefix
        self.problems = tuple(problems)


class DuplicateRateError(DeckError):
    """Two rates for the same prefix, band and effective window."""

    code = "DUPLICATE_PREFIX"

    def __init__(self, prefix: str, first: str, second: str) -> None:
        super().__init__(f"duplicate prefix {prefix!r}: destinations {first!r} and {second!r}")
        self.prefix = prefix


class OverlappingRateError(DeckError):
    """Two rates of one prefix and band whose effective windows overlap."""

    code = "OVERLAPPING_RATES"

    def __init__(self, prefix: str, message: str) -> None:
        super().__init__(message)
        self.prefix = prefix


def check_info(info: DeckInfo) -> None:
    """Raise :class:`DeckError` when the deck's identity, rules or bands are invalid."""
    problems = info_problems(info)
    problems += [f"band row {index + 1}: {message}" for index, message in band_problems(info)]
    if problems:
        raise DeckError(f"deck {info.name!r}: {'; '.join(problems)}")


class _Choices:
    """The rates of one prefix when one of them depends on the band or the date."""

    __slots__ = ("all", "anytime", "banded")

    def __init__(self, rates: Sequence[Rate]) -> None:
        self.all = tuple(rates)
        self.banded = tuple(rate for rate in rates if rate.band)
        self.anytime = tuple(rate for rate in rates if not rate.band)

    def pick(self, at: datetime, band: str) -> Rate | None:
        for rate in self.banded:
            if rate.band == band and rate.in_force(at):
                return rate
        for rate in self.anytime:
            if rate.in_force(at):
                return rate
        return None


def _indexed(found: Rate | list[Rate]) -> Rate | _Choices:
    """A prefix's value in the index: its rate when it is one for all times, else choices."""
    if isinstance(found, list):
        return _Choices(found)
    return _Choices([found]) if found.conditional else found


class RateDeck:
    """A named set of rates in one currency, matched by longest prefix, band and date."""

    __slots__ = ("_calendar", "_conditional", "_index", "_info", "_rates")

    def __init__(self, info: DeckInfo, rates: Sequence[Rate]) -> None:
        check_info(info)
        rates = tuple(rates)
        problems = deck_problems(info, rates)
        if problems:
            first = problems[0]
            rate = rates[first.index]
            if first.code == DUPLICATE:
                other = next(
                    r for r in rates if (r.prefix, r.band) == (rate.prefix, rate.band)
                )
                raise DuplicateRateError(rate.prefix, other.destination, rate.destination)
            if first.code == OVERLAP:
                raise OverlappingRateError(rate.prefix, first.message)
            messages = [p.message for p in problems if p.index == first.index]
            raise InvalidRateError(str(rate.prefix), messages)
        self._build(info, rates)

    @classmethod
    def _from_checked(cls, info: DeckInfo, rates: tuple[Rate, ...]) -> RateDeck:
        """A deck of rates that just passed :func:`deck_problems` with none (CSV import)."""
        deck = cls.__new__(cls)
        deck._build(info, rates)
        return deck

    def _build(self, info: DeckInfo, rates: tuple[Rate, ...]) -> None:
        by_prefix: dict[str, Rate | list[Rate]] = {}
        conditional = False
        for rate in rates:
            conditional = conditional or rate.conditional
            found = by_prefix.get(rate.prefix)
            if found is None:
                by_prefix[rate.prefix] = rate
            elif isinstance(found, list):
                found.append(rate)
            else:
                by_prefix[rate.prefix] = [found, rate]
        self._info = info
        self._rates = rates
        self._conditional = conditional
        self._calendar = BandCalendar(info.bands) if info.bands else None
        self._index: PrefixIndex[Rate | _Choices] = PrefixIndex(
            (prefix, _indexed(found)) for prefix, found in by_prefix.items()
        )

    @property
    def info(self) -> DeckInfo:
        """The deck's name, currency, rounding rules and bands."""
        return self._info

    @property
    def rates(self) -> tuple[Rate, ...]:
        """Every rate, in the order given."""
        return self._rates

    def match(self, number: str, at: datetime | None = None, tz: str = "UTC") -> Rate | None:
        """The rate for a call to ``number`` starting at ``at`` (None: now) in zone ``tz``.

        A leading '+' of the number is ignored; ``at`` must be timezone-aware; ``tz`` is
        an IANA name (``ValueError`` when unknown, only read when a band matters).
        """
        if not self._conditional:
            found = self._index.longest_match(number)
            assert found is None or isinstance(found, Rate)
            return found
        if at is None:
            at = datetime.now(UTC)
        elif at.utcoffset() is None:
            raise DeckError(f"deck {self._info.name!r}: a naive time {at!r} (use UTC)")
        band: str | None = None
        for value in self._index.matches(number):
            if isinstance(value, Rate):
                return value
            if band is None:
                calendar = self._calendar
                band = "" if calendar is None else calendar.band_at(local_time(at, tz))
            found = value.pick(at, band)
            if found is not None:
                return found
        return None

    def get(self, prefix: str) -> Rate | None:
        """The rate of exactly ``prefix`` when it has one rate for all times, else None."""
        value = self._index.get(prefix)
        return value if isinstance(value, Rate) else None

    def rates_of(self, prefix: str) -> tuple[Rate, ...]:
        """Every rate of exactly ``prefix`` (all bands and windows), in deck order."""
        value = self._index.get(prefix)
        if value is None:
            return ()
        if isinstance(value, Rate):
            return (value,)
        return value.all

    def __len__(self) -> int:
        return len(self._rates)

    def __repr__(self) -> str:
        return f"RateDeck(name={self._info.name!r}, rates={len(self._rates)})"
