"""The in-memory tariff catalog: every rate deck, indexed, and which deck an account uses.

Loaded from SQL at start and on reload; a reload swaps the whole catalog (or one deck)
at once. A price is a :class:`PricedDestination` (deck rules + the matched rate), an
immutable value: a call keeps the one it was priced with until it ends, whatever
replaces the deck meanwhile (the session manager holds it; see ``daemon.sessions``).

A price is looked up for the call's START time in the account's time zone
(``RateDeck.match``): the band and the effective window in force when the call began.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from storage.decks import DeckStore
from tariffs.bundles import CallTerms
from tariffs.deck import DeckInfo, Rate
from tariffs.ratedeck import RateDeck

if TYPE_CHECKING:
    from balance.bundles import BundleCover
    from daemon.lcr_service import RouteSelection
    from daemon.reseller_chain import ChainLevel

log = structlog.get_logger(__name__)

PLAIN_TERMS = CallTerms()
"""The terms of a call priced exactly as its rate says (no tier, no bundle)."""


@dataclass(frozen=True, slots=True)
class PricedDestination:
    """The retail price of one call: the deck's rules and the matched rate.

    ``selection`` is the LCR route list the call was authorized with (its carriers' buy
    prices), kept with the price so the rated call records its carrier, buy cost and margin.
    ``chain`` is the reseller levels above the account with their wholesale prices
    (``daemon.reseller_chain``; empty: no reseller chain).
    ``terms`` is what the customer's retail price depends on besides the rate (its volume
    tier schedule, the bundled seconds held at authorization; plain: none) and ``bundle``
    the bundle whose minutes the call draws first (``balance.bundles``; None: money only).
    """

    info: DeckInfo
    rate: Rate
    selection: RouteSelection | None = None
    chain: tuple[ChainLevel, ...] = ()
    terms: CallTerms = PLAIN_TERMS
    bundle: BundleCover | None = None

    def with_selection(self, selection: RouteSelection) -> PricedDestination:
        """The same price with the route list ``selection`` (``dataclasses.replace`` costs
        ~4x more: this runs on every authorization with LCR)."""
        return PricedDestination(
            self.info, self.rate, selection, self.chain, self.terms, self.bundle
        )

    @property
    def reserves_plainly(self) -> bool:
        """Whether the call reserves money on its own account only: no reseller chain,
        no bundle, no tier schedule."""
        return not self.chain and self.bundle is None and self.terms.plain


class TariffCatalog:
    """Rate decks by name; ``price(deck_name, callee, at, tz)`` finds the rate in force."""

    def __init__(self, decks: Mapping[str, RateDeck] | None = None) -> None:
        self._decks: dict[str, RateDeck] = dict(decks or {})

    def replace_all(self, decks: Mapping[str, RateDeck]) -> None:
        """Swap in a freshly loaded set of decks atomically."""
        self._decks = dict(decks)

    def replace(self, deck: RateDeck) -> None:
        """Swap in one deck."""
        decks = dict(self._decks)
        decks[deck.info.name] = deck
        self._decks = decks

    async def reload(self, store: DeckStore, name: str | None = None) -> list[str]:
        """Reload every deck (or the deck ``name``) from SQL and swap it in; the names.

        Decks are read and indexed before the swap: until then calls are priced with the
        previous decks, and a failure leaves them in place. A deck gone from SQL is
        dropped by a full reload only.
        """
        if name is None:
            loaded = await store.load_all()
            self.replace_all({n: RateDeck(info, rates) for n, (info, rates) in loaded.items()})
            names = sorted(loaded)
        else:
            found = await store.load(name)
            if found is None:
                return []
            self.replace(RateDeck(found[0], found[1]))
            names = [name]
        log.info("rate decks reloaded", decks=names)
        return names

    def names(self) -> list[str]:
        """Names of the loaded decks."""
        return sorted(self._decks)

    def deck(self, name: str) -> RateDeck | None:
        """The loaded deck ``name``, or None."""
        return self._decks.get(name)

    def price(
        self,
        deck_name: str | None,
        callee: str,
        at: datetime | None = None,
        tz: str = "UTC",
    ) -> PricedDestination | None:
        """The rate for a call to ``callee`` starting at ``at`` (None: now) in zone ``tz``.

        None when there is no such deck or no rate in force for the number.
        """
        if not deck_name:
            return None
        deck = self._decks.get(deck_name)
        if deck is None:
            return None
        rate = deck.match(callee, at, tz)
        if rate is None:
            return None
        return PricedDestination(info=deck.info, rate=rate)
