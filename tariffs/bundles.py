"""Bundled minutes (pure): an abstract balance of seconds, consumed before money.

A :class:`Bundle` includes ``seconds`` per period (the calendar month in the account's
time zone, ``tariffs.tiers.period_of``) for calls to some destination prefixes. An
account may hold several; the one that covers a callee is the one with the LONGEST
matching prefix (:func:`covering_bundle`; a tie goes to the bundle given first). When
that bundle is used up the call is paid with money: a call never looks for a second
bundle.

**Where the boundary falls.** A call is first billed by its rate exactly as without a
bundle: whole seconds, raised to the minimum duration, each interval rounded up to its
increment (``tariffs.rating``). Those billable seconds are then taken in order: the
first ``B`` come from the bundle, where ``B`` is what the call holds from it (at most
what was left), and the rest are paid at the per-minute price of the interval they are
in. The boundary is a second, not an increment: a 60/60 call of 61 s bills 120 s, and
with 100 bundled seconds left it uses those 100 and pays 20 s at the rate (the second
increment is split). The bundle is debited by the bundled seconds used (``B`` capped at
the billable seconds). So a bundle of ``N`` seconds lasts exactly ``N`` billable
seconds, and a call outrunning it pays for the billable seconds past it, never more.

The bundle replaces the per-minute price only (CGRateS's abstract ``*voice`` balance
does the same): the connect fee is still paid with money, ``max_cost`` still caps what
a call costs, and ``min_cost`` applies only to a call that used no bundled second.
Tier discounts (``tariffs.tiers``) apply to the paid seconds at their own positions.

:class:`CallTerms` carries what a call's price depends on besides its rate (the tier
schedule and the bundled seconds it holds); :func:`price_call` rates a finished call,
:func:`terms_cost` prices the first ``n`` seconds (a reservation), and
:func:`terms_max_usage` is the longest affordable call.

Errors::

    ValueError
    └── PlanError                 code INVALID_PLAN   (tariffs.tiers)
        └── InvalidBundle         code INVALID_BUNDLE (names the field)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

from tariffs.deck import DeckInfo, Rate
from tariffs.rating import max_usage, rate_call
from tariffs.tiers import (
    PERIOD_MONTH,
    PERIODS,
    PlanError,
    TierPlan,
    Usage,
    billed_parts,
    discount_schedule,
    discounted_rate,
    positional_cost,
    positional_max_usage,
    whole_seconds,
)

MAX_BUNDLE_SECONDS = 2**31 - 1
MAX_PREFIX_LENGTH = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PREFIX = re.compile(r"[0-9]{1,32}")
_NO_USAGE = Usage()


class InvalidBundle(PlanError):
    """A bundle field with an invalid value; ``field`` names it."""

    code = "INVALID_BUNDLE"

    def __init__(self, bundle: str, field: str, message: str) -> None:
        super().__init__(f"bundle {bundle!r} {field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Bundle:
    """``seconds`` included per period for calls to ``prefixes`` (validated)."""

    name: str
    seconds: int
    prefixes: tuple[str, ...]
    period: str = PERIOD_MONTH

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidBundle(str(name), "name", "1-64 letters, digits, '_', '.' or '-'")
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise InvalidBundle(name, "seconds", f"must be an int: {seconds!r}")
        if not 0 <= seconds <= MAX_BUNDLE_SECONDS:
            raise InvalidBundle(name, "seconds", f"must be 0..{MAX_BUNDLE_SECONDS}: {seconds}")
        prefixes = tuple(self.prefixes)
        if not prefixes:
            raise InvalidBundle(name, "prefixes", "at least one prefix is needed")
        for prefix in prefixes:
            if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
                raise InvalidBundle(name, "prefixes", f"1-32 digits, not {prefix!r}")
        if len(set(prefixes)) != len(prefixes):
            raise InvalidBundle(name, "prefixes", f"a prefix is repeated: {list(prefixes)}")
        if self.period not in PERIODS:
            raise InvalidBundle(name, "period", f"one of {list(PERIODS)}: {self.period!r}")
        object.__setattr__(self, "prefixes", prefixes)


@dataclass(frozen=True, slots=True)
class BundleMatch:
    """The bundle that covers a callee, and the prefix that matched."""

    bundle: Bundle
    prefix: str


def covering_bundle(bundles: Iterable[Bundle], callee: str) -> BundleMatch | None:
    """The bundle with the longest prefix of ``callee`` (a leading '+' ignored), or None."""
    number = callee[1:] if callee.startswith("+") else callee
    best: BundleMatch | None = None
    for bundle in bundles:
        for prefix in bundle.prefixes:
            if number.startswith(prefix) and (best is None or len(prefix) > len(best.prefix)):
                best = BundleMatch(bundle, prefix)
    return best


@dataclass(frozen=True, slots=True)
class CallTerms:
    """What a call's price depends on besides its rate.

    ``discounts``: the tier schedule (``tariffs.tiers.discount_schedule``), empty without
    a tier plan; ``bundle_seconds``: the bundled seconds the call holds (its reservation
    on the abstract balance; what it USES is capped at its billable seconds);
    ``tier_usage``: the plan's counter the schedule was computed from (stored on the rated
    call, so rerating prices it at the same tier).
    """

    discounts: tuple[tuple[int, int], ...] = ()
    bundle_seconds: int = 0
    tier_usage: int | None = None  # the plan's counter when priced (None: no plan)

    @classmethod
    def of(
        cls, plan: TierPlan | None, usage: Usage = _NO_USAGE, bundle_seconds: int = 0
    ) -> CallTerms:
        """The terms of a call of an account with ``plan`` (or none) at ``usage``."""
        if plan is None:
            return cls((), bundle_seconds, None)
        return cls(discount_schedule(plan, usage), bundle_seconds, plan.units(usage))

    def holding(self, bundle_seconds: int) -> CallTerms:
        """The same terms with the call now holding ``bundle_seconds``."""
        return replace(self, bundle_seconds=bundle_seconds)

    def start_rate(self, rate: Rate) -> Rate:
        """The rate of the call's first paid second (the tier it starts in): for records."""
        points = self.discounts[0][1] if self.discounts else 0
        return discounted_rate(rate, Decimal(points).scaleb(-2))

    @property
    def plain(self) -> bool:
        """True when the call is priced exactly as its rate says (no tier, no bundle)."""
        if self.bundle_seconds:
            return False
        return not self.discounts or all(points == 0 for _, points in self.discounts)


@dataclass(frozen=True, slots=True)
class CallPrice:
    """A rated call under its terms: money cost and how its billable seconds split."""

    cost: Decimal
    billable_seconds: int
    bundle_seconds: int  # billable seconds taken from the bundle

    @property
    def paid_seconds(self) -> int:
        """Billable seconds paid with money."""
        return self.billable_seconds - self.bundle_seconds


def bundle_seconds_for(rate: Rate, seconds: int) -> int:
    """Bundled seconds that cover the first ``seconds`` of a call: its billable seconds."""
    return sum(part for _, part in billed_parts(rate, seconds))


def price_call(
    info: DeckInfo, rate: Rate, duration: Decimal | int, terms: CallTerms = CallTerms()
) -> CallPrice:
    """Rate a finished call of ``duration`` seconds under ``terms``."""
    if terms.plain:  # the engine itself (compiled, cached): the same answer, faster
        charge = rate_call(info, rate, duration)
        return CallPrice(charge.cost, charge.billable_seconds, 0)
    priced = positional_cost(info, rate, duration, terms.discounts, terms.bundle_seconds)
    return CallPrice(priced.cost, priced.billable_seconds, priced.free_seconds)


def split_call(
    info: DeckInfo, rate: Rate, duration: Decimal | int, bundle_seconds: int
) -> CallPrice:
    """How a call splits between ``bundle_seconds`` held and money (no tier plan)."""
    return price_call(info, rate, duration, CallTerms(bundle_seconds=bundle_seconds))


def terms_cost(info: DeckInfo, rate: Rate, seconds: int, terms: CallTerms) -> Decimal:
    """The money cost of the first ``seconds`` of a call (a reservation slice)."""
    return price_call(info, rate, whole_seconds(seconds), terms).cost


def terms_max_usage(
    info: DeckInfo, rate: Rate, credit: Decimal, terms: CallTerms, limit: int | None = None
) -> int:
    """The longest call (whole seconds) whose money cost under ``terms`` is within ``credit``.

    With plain terms this is ``tariffs.rating.max_usage`` (closed form).
    """
    if terms.plain:
        return max_usage(info, rate, credit, limit)
    return positional_max_usage(
        info, rate, credit, terms.discounts, terms.bundle_seconds, limit
    )
