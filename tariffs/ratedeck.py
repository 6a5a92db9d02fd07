"""A validated, indexed rate deck: ``RateDeck(info, rates).match(number) -> Rate | None``.

Validation is shared with the CSV importer through :func:`rate_problems`, so a deck
built in code and a deck read from a file obey the same rules: digits-only prefix,
non-negative prices with at most 6 decimals, increments that are positive whole
seconds, a minimum duration that is a non-negative whole number of seconds, and no
prefix twice.

Errors::

    ValueError
    └── DeckError               code INVALID_DECK   (bad DeckInfo)
        ├── InvalidRateError    code INVALID_RATE   (names the prefix and every problem)
        ├── DuplicateRateError  code DUPLICATE_PREFIX
        └── DeckImportError     code DECK_IMPORT    (tariffs.csv_deck, every bad line)
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.prefix_index import PrefixIndex, is_valid_prefix

MAX_PRICE_DECIMALS = 6


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
    """Two rates for the same prefix."""

    code = "DUPLICATE_PREFIX"

    def __init__(self, prefix: str, first: str, second: str) -> None:
        super().__init__(f"duplicate prefix {prefix!r}: destinations {first!r} and {second!r}")
        self.prefix = prefix


def price_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid price (Decimal, finite, >= 0, <= 6 decimals), or None."""
    if not isinstance(value, Decimal):
        return f"{name} must be a Decimal, not {type(value).__name__}"
    if not value.is_finite():
        return f"{name} is not a finite number: {value}"
    if value < 0:
        return f"{name} must not be negative: {value}"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PRICE_DECIMALS:
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


def rate_problems(rate: Rate) -> list[str]:
    """Every reason why ``rate`` is invalid (an empty list when it is valid)."""
    problems: list[str] = []
    if not is_valid_prefix(rate.prefix):
        problems.append(f"prefix must be ASCII digits only, without '+': {rate.prefix!r}")
    for problem in (
        price_problem("rate", rate.rate),
        price_problem("connect_fee", rate.connect_fee),
        seconds_problem("initial_increment", rate.initial_increment, allow_zero=False),
        seconds_problem("subsequent_increment", rate.subsequent_increment, allow_zero=False),
        seconds_problem("minimum_duration", rate.minimum_duration, allow_zero=True),
    ):
        if problem is not None:
            problems.append(problem)
    return problems


def check_info(info: DeckInfo) -> None:
    """Raise :class:`DeckError` when the deck's identity or rules are invalid."""
    if not info.name.strip():
        raise DeckError("deck name must not be empty")
    if not isinstance(info.rounding, Rounding):
        raise DeckError(f"deck {info.name!r}: unknown rounding {info.rounding!r}")
    if isinstance(info.decimals, bool) or not 0 <= info.decimals <= MAX_PRICE_DECIMALS:
        raise DeckError(
            f"deck {info.name!r}: decimals must be 0..{MAX_PRICE_DECIMALS}, not {info.decimals!r}"
        )
    if not info.currency.strip():
        raise DeckError(f"deck {info.name!r}: currency must not be empty")


class RateDeck:
    """A named set of rates in one currency, matched by longest prefix."""

    __slots__ = ("_index", "_info", "_rates")

    def __init__(self, info: DeckInfo, rates: Sequence[Rate]) -> None:
        check_info(info)
        seen: dict[str, Rate] = {}
        for rate in rates:
            problems = rate_problems(rate)
            if problems:
                raise InvalidRateError(str(rate.prefix), problems)
            first = seen.get(rate.prefix)
            if first is not None:
                raise DuplicateRateError(rate.prefix, first.destination, rate.destination)
            seen[rate.prefix] = rate
        self._info = info
        self._rates = tuple(rates)
        self._index: PrefixIndex[Rate] = PrefixIndex(seen.items())

    @property
    def info(self) -> DeckInfo:
        """The deck's name, currency and rounding rules."""
        return self._info

    @property
    def rates(self) -> tuple[Rate, ...]:
        """Every rate, in the order given."""
        return self._rates

    def match(self, number: str) -> Rate | None:
        """The rate of the longest prefix of ``number`` (a leading '+' is ignored)."""
        return self._index.longest_match(number)

    def get(self, prefix: str) -> Rate | None:
        """The rate of exactly ``prefix``, or None."""
        return self._index.get(prefix)

    def __len__(self) -> int:
        return len(self._rates)

    def __repr__(self) -> str:
        return f"RateDeck(name={self._info.name!r}, rates={len(self._rates)})"
