"""Least-cost routing (pure): carriers with buy decks -> the ordered route list of one call.

A **carrier** sells us termination: its own buy deck (a rate deck of the catalog), a dial
template that becomes the switch's dial string, a ``priority`` and a ``weight``.
:func:`rank_routes` prices the callee in every enabled carrier's buy deck and orders the
carriers that have the destination:

1. by the buy cost of a **reference call** of :data:`REFERENCE_CALL_SECONDS` (60 s), rated
   by the pure engine with the buy deck's own rules, so connect fees, increments, minimum
   durations and rounding count (a carrier at 0.010/min with a 0.05 connect fee costs
   more than one at 0.030/min without);
2. ties by ``priority`` (lower first), then ``weight`` (higher first), then carrier id,
   so the order is total and deterministic whatever the order carriers are given in.

Each route carries its buy rate (per minute), the reference buy cost and the reference
margin (sell - buy for the same reference call, the sell side rated with the sell deck).

**Margin guard** (:class:`MarginGuard`): a route whose reference margin is below
``min_margin`` (money per reference minute) or below ``min_margin_percent`` of the
reference sell cost is skipped (equal passes). Outcomes (:class:`LcrOutcome`):

- ``ROUTES``: at least one route is left;
- ``MARGIN_GUARD``: carriers have the destination but the guard skipped every one (the
  call is denied with ``MARGIN_GUARD``);
- ``NO_CARRIER``: no enabled carrier has the destination: an empty list, NOT a denial
  (the switch uses its default trunk, as when LCR is off).

There is no currency conversion: a carrier whose buy deck is in another currency than
the sell deck, or whose deck is not loaded, is not a candidate. A buy deck is matched
for the call's start time (effective dates; its time bands read in UTC).

Dial templates substitute exactly two fields, ``{number}`` (the callee as dialled, ASCII
digits with one optional leading ``+``) and ``{carrier}`` (the carrier id), e.g.
``PJSIP/{number}@{carrier}`` or ``sofia/gateway/{carrier}/{number}``. Any other field,
a conversion or format spec, and any character outside ``DIAL_CHARACTERS`` is refused:
the result goes into Asterisk ``Dial()`` (``,`` ``&`` ``$`` ``{}`` ``()`` and quotes are
syntax there) and FreeSWITCH ``bridge`` (``|`` ``,`` ``[]`` ``{}`` ``^`` ``:_:``).

Errors::

    ValueError
    └── LcrError                  code LCR_ERROR
        ├── InvalidCarrier        code INVALID_CARRIER        (names the field)
        ├── InvalidDialTemplate   code INVALID_DIAL_TEMPLATE  (names the template)
        ├── InvalidDialNumber     code INVALID_DIAL_NUMBER    (a callee that is not +digits)
        └── InvalidMarginGuard    code INVALID_MARGIN_GUARD
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple, Protocol

from tariffs.deck import DeckInfo, Rate
from tariffs.ratedeck import RateDeck
from tariffs.rating import call_cost

REFERENCE_CALL_SECONDS = 60
"""Length of the reference call whose buy and sell costs order routes and guard margins."""

DIAL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "/@:.+-_=;#*%~?")
"""Every character a rendered dial string may hold (nothing the switches interpret)."""

TEMPLATE_FIELDS = ("number", "carrier")
MAX_TEMPLATE_LENGTH = 255
_CARRIER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIAL_NUMBER = re.compile(r"\+?[0-9]{1,64}")
_PERCENT_DECIMALS = 2  # stored as basis points
_MONEY_DECIMALS = 6  # stored as micro-units

BuyPrice = tuple[DeckInfo, Rate]
"""A carrier's buy deck rules and the rate it matched for one call."""


class LcrError(ValueError):
    """Base of the LCR errors, with a stable ``code``."""

    code = "LCR_ERROR"


class InvalidCarrier(LcrError):
    """A carrier field with an invalid value; ``field`` names it."""

    code = "INVALID_CARRIER"

    def __init__(self, carrier: str, field: str, message: str) -> None:
        super().__init__(f"carrier {carrier!r} {field}: {message}")
        self.field = field


class InvalidDialTemplate(LcrError):
    """A dial template with an unknown field or a character the switch would interpret."""

    code = "INVALID_DIAL_TEMPLATE"


class InvalidDialNumber(LcrError):
    """A callee that cannot go into a dial string (not ASCII digits with an optional '+')."""

    code = "INVALID_DIAL_NUMBER"


class InvalidMarginGuard(LcrError):
    """A margin guard threshold out of range or finer than storage keeps."""

    code = "INVALID_MARGIN_GUARD"


class Priced(Protocol):
    """A deck's rules and the rate it matched (``daemon.tariff_catalog.PricedDestination``)."""

    @property
    def info(self) -> DeckInfo: ...

    @property
    def rate(self) -> Rate: ...


class BuyDecks(Protocol):
    """Where the carriers' buy decks are found (``daemon.tariff_catalog.TariffCatalog``)."""

    def deck(self, name: str) -> RateDeck | None: ...


# --- the one place this module uses the deck lookup and the rating engine -----------------


@functools.lru_cache(maxsize=65536)
def _reference_cost(info: DeckInfo, rate: Rate) -> Decimal:
    """The cost of the reference call under ``info`` and ``rate`` (pure, cached)."""
    return call_cost(info, rate, REFERENCE_CALL_SECONDS)


def _buy_rate(decks: BuyDecks, deck_name: str, callee: str, at: datetime) -> BuyPrice | None:
    """The carrier's buy deck and its rate for a call to ``callee`` starting at ``at``.

    None when the deck is not loaded or has no rate in force for the number. A buy deck's
    time bands are read in UTC.
    """
    deck = decks.deck(deck_name)
    if deck is None:
        return None
    rate = deck.match(callee, at)
    return None if rate is None else (deck.info, rate)


def carrier_cost(route: RankedRoute, duration: Decimal | int) -> Decimal:
    """What the carrier of ``route`` charges for a call of ``duration`` seconds."""
    return call_cost(route.buy_deck, route.buy, duration)


# --- dial templates ------------------------------------------------------------------------


def _bad_characters(text: str) -> str:
    return "".join(sorted({c for c in text if c not in DIAL_CHARACTERS}))


def check_dial_template(template: str) -> None:
    """Raise :class:`InvalidDialTemplate` unless ``template`` is safe to render.

    Only ``{number}`` (required) and ``{carrier}``, no conversion or format spec, no
    escaped braces, literal characters from :data:`DIAL_CHARACTERS`, no ``:_:``.
    """
    if not isinstance(template, str) or not 0 < len(template) <= MAX_TEMPLATE_LENGTH:
        raise InvalidDialTemplate(f"dial template: 1-{MAX_TEMPLATE_LENGTH} characters")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidDialTemplate(f"dial template {template!r}: {exc}") from exc
    fields: set[str] = set()
    for literal, field, spec, conversion in parts:
        bad = _bad_characters(literal)
        if bad:
            raise InvalidDialTemplate(
                f"dial template {template!r}: characters the switch would interpret: {bad!r}"
            )
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            raise InvalidDialTemplate(
                f"dial template {template!r}: only {{number}} and {{carrier}} are substituted, "
                f"not {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}"
            )
        fields.add(field)
    if "number" not in fields:
        raise InvalidDialTemplate(f"dial template {template!r}: {{number}} is missing")
    if ":_:" in template:
        raise InvalidDialTemplate(f"dial template {template!r}: ':_:' separates FreeSWITCH legs")


def check_dial_number(number: str) -> None:
    """Raise :class:`InvalidDialNumber` unless ``number`` is ASCII digits with an optional '+'."""
    if not isinstance(number, str) or not _DIAL_NUMBER.fullmatch(number):
        raise InvalidDialNumber(f"not a dialable number (+digits): {number!r}")


def render_dial_string(template: str, number: str, carrier: str) -> str:
    """``template`` with ``{number}`` and ``{carrier}`` substituted, everything validated."""
    check_dial_template(template)
    check_dial_number(number)
    if not isinstance(carrier, str) or not _CARRIER_ID.fullmatch(carrier):
        raise InvalidDialTemplate(f"carrier id {carrier!r} cannot go into a dial string")
    return _render(template, number, carrier)


def _render(template: str, number: str, carrier: str) -> str:
    """Substitute validated parts (a carrier's own template and id, a checked number)."""
    dial = template.replace("{number}", number).replace("{carrier}", carrier)
    if ":_:" in dial or not DIAL_CHARACTERS.issuperset(dial):  # never, with valid parts
        raise InvalidDialTemplate(f"dial string {dial!r} from {template!r} is unsafe")
    return dial


# --- carriers and guards -------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Carrier:
    """A termination provider: its buy deck, dial template, priority and weight."""

    id: str
    name: str
    buy_deck: str
    dial_template: str
    priority: int = 0  # lower is tried first among equal costs
    weight: int = 0  # higher is tried first among equal costs and priorities
    enabled: bool = True
    concurrency_limit: int | None = None  # live calls on this trunk; None: no cap
    cps_limit: int | None = None  # calls per second on this trunk; None: no cap

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _CARRIER_ID.fullmatch(self.id):
            raise InvalidCarrier(
                str(self.id), "id", "1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit"
            )
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise InvalidCarrier(self.id, "name", "a string of at most 200 characters")
        if not isinstance(self.buy_deck, str) or not 0 < len(self.buy_deck) <= 64:
            raise InvalidCarrier(self.id, "buy_deck", f"1-64 characters, got {self.buy_deck!r}")
        try:
            check_dial_template(self.dial_template)
        except InvalidDialTemplate as exc:
            raise InvalidCarrier(self.id, "dial_template", str(exc)) from exc
        if not _is_int(self.priority) or not -(2**31) <= self.priority < 2**31:
            raise InvalidCarrier(self.id, "priority", f"a 32-bit int, got {self.priority!r}")
        if not _is_int(self.weight) or not 0 <= self.weight < 2**31:
            raise InvalidCarrier(self.id, "weight", f"an int >= 0, got {self.weight!r}")
        if not isinstance(self.enabled, bool):
            raise InvalidCarrier(self.id, "enabled", f"a bool, got {self.enabled!r}")
        for name in ("concurrency_limit", "cps_limit"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 0 <= value < 2**31):
                raise InvalidCarrier(self.id, name, f"None or an int >= 0, got {value!r}")

    @property
    def capped(self) -> bool:
        """Whether the trunk has a concurrency or CPS cap."""
        return self.concurrency_limit is not None or self.cps_limit is not None

    def dial_string(self, number: str) -> str:
        """This carrier's dial string for ``number``."""
        check_dial_number(number)
        return _render(self.dial_template, number, self.id)


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


@dataclass(frozen=True, slots=True)
class MarginGuard:
    """The least margin a route must leave on the reference call, absolute and relative."""

    min_margin: Decimal = Decimal(0)  # money per reference minute (sell - buy)
    min_margin_percent: Decimal = Decimal(0)  # percent of the reference sell cost

    def __post_init__(self) -> None:
        for name, value, decimals, top in (
            ("min_margin", self.min_margin, _MONEY_DECIMALS, None),
            ("min_margin_percent", self.min_margin_percent, _PERCENT_DECIMALS, Decimal(100)),
        ):
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise InvalidMarginGuard(f"{name}: a Decimal >= 0, got {value!r}")
            if _decimals(value) > decimals:
                raise InvalidMarginGuard(f"{name}: at most {decimals} decimals, got {value}")
            if top is not None and value > top:
                raise InvalidMarginGuard(f"{name}: at most {top}, got {value}")

    def allows(self, sell_cost: Decimal, buy_cost: Decimal) -> bool:
        """True when ``sell_cost - buy_cost`` meets both thresholds (equal passes)."""
        margin = sell_cost - buy_cost
        return margin >= self.min_margin and margin * 100 >= self.min_margin_percent * sell_cost


def resolve_guard(
    account_id: str,
    own: Mapping[str, MarginGuard],
    reseller: Mapping[str, MarginGuard],
    parents: Mapping[str, str | None],
    *,
    max_depth: int = 32,
) -> tuple[str, MarginGuard] | None:
    """The guard of an account and whose it is: its own, else the nearest reseller's.

    ``own`` holds the guards set with ``--account``, ``reseller`` those set with
    ``--reseller`` (they apply to the reseller's customers down the chain, not to the
    reseller's own calls); ``parents`` maps an account to its reseller
    (``accounts.parent_id``). The answer names the account the guard is set on.
    """
    guard = own.get(account_id)
    if guard is not None:
        return account_id, guard
    seen = {account_id}
    parent = parents.get(account_id)
    while parent is not None and parent not in seen and len(seen) <= max_depth:
        guard = reseller.get(parent)
        if guard is not None:
            return parent, guard
        seen.add(parent)
        parent = parents.get(parent)
    return None


def effective_guard(
    account_id: str,
    own: Mapping[str, MarginGuard],
    reseller: Mapping[str, MarginGuard],
    parents: Mapping[str, str | None],
) -> MarginGuard | None:
    """The guard in force for ``account_id`` (:func:`resolve_guard`), or None."""
    found = resolve_guard(account_id, own, reseller, parents)
    return None if found is None else found[1]


# --- ranking -------------------------------------------------------------------------------


class LcrOutcome(StrEnum):
    """What the ranking found for one call."""

    ROUTES = "ROUTES"
    NO_CARRIER = "NO_CARRIER"  # no enabled carrier has the destination: not a denial
    MARGIN_GUARD = "MARGIN_GUARD"  # every carrier with the destination was skipped


class RankedRoute(NamedTuple):
    """One route of the list: the carrier, its dial string and its buy price.

    A named tuple rather than a frozen dataclass: one is built per carrier on every
    authorization, and a tuple builds in a quarter of the time.
    """

    carrier: str
    dial_string: str
    buy_deck: DeckInfo
    buy: Rate  # the matched buy rate
    reference_buy_cost: Decimal  # cost of the reference call at the buy price
    reference_margin: Decimal  # reference sell cost - reference buy cost
    priority: int
    weight: int

    @property
    def buy_rate(self) -> Decimal:
        """The buy price per minute."""
        return self.buy.rate


@dataclass(frozen=True, slots=True)
class RouteList:
    """The routes of one call in the order to try them, and the carriers the guard skipped."""

    routes: tuple[RankedRoute, ...]
    skipped: tuple[RankedRoute, ...] = ()
    reference_sell_cost: Decimal = Decimal(0)

    @property
    def outcome(self) -> LcrOutcome:
        """``ROUTES``, ``MARGIN_GUARD`` (all skipped) or ``NO_CARRIER`` (none had it)."""
        if self.routes:
            return LcrOutcome.ROUTES
        return LcrOutcome.MARGIN_GUARD if self.skipped else LcrOutcome.NO_CARRIER


def route_order(route: RankedRoute) -> tuple[Decimal, int, int, str]:
    """The sort key of a route: reference buy cost, priority, -weight, carrier id."""
    return (route.reference_buy_cost, route.priority, -route.weight, route.carrier)


def rank_routes(
    callee: str,
    sell: Priced,
    carriers: Iterable[Carrier],
    buy_decks: BuyDecks,
    at: datetime,
    guard: MarginGuard | None = None,
) -> RouteList:
    """The routes for a call to ``callee`` sold at ``sell``, cheapest first (module doc)."""
    check_dial_number(callee)
    sell_cost = _reference_cost(sell.info, sell.rate)
    currency = sell.info.currency
    kept: list[RankedRoute] = []
    skipped: list[RankedRoute] = []
    seen: set[str] = set()
    for carrier in carriers:
        if carrier.id in seen:
            raise InvalidCarrier(carrier.id, "id", "given twice")
        seen.add(carrier.id)
        if not carrier.enabled:
            continue
        found = _buy_rate(buy_decks, carrier.buy_deck, callee, at)
        if found is None or found[0].currency != currency:
            continue
        info, rate = found
        buy_cost = _reference_cost(info, rate)
        route = RankedRoute(
            carrier.id,
            _render(carrier.dial_template, callee, carrier.id),
            info,
            rate,
            buy_cost,
            sell_cost - buy_cost,
            carrier.priority,
            carrier.weight,
        )
        if guard is None or guard.allows(sell_cost, buy_cost):
            kept.append(route)
        else:
            skipped.append(route)
    kept.sort(key=route_order)
    skipped.sort(key=route_order)
    return RouteList(routes=tuple(kept), skipped=tuple(skipped), reference_sell_cost=sell_cost)
