"""The in-memory tariff catalog: every rate deck, indexed, and which deck an account uses.

Loaded from SQL at start and on reload; a reload swaps the whole catalog at once, so a
call keeps the ``PricedRoute`` (deck rules + rate) it was authorized with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tariffs.deck import DeckInfo, Rate
from tariffs.ratedeck import RateDeck


@dataclass(frozen=True, slots=True)
class PricedDestination:
    """The retail price of one call: the deck's rules and the matched rate."""

    info: DeckInfo
    rate: Rate


class TariffCatalog:
    """Rate decks by name; ``price(deck_name, callee)`` finds the longest-prefix rate."""

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

    def names(self) -> list[str]:
        """Names of the loaded decks."""
        return sorted(self._decks)

    def price(self, deck_name: str | None, callee: str) -> PricedDestination | None:
        """The rate for ``callee`` in the named deck, or None (no deck, no prefix)."""
        if not deck_name:
            return None
        deck = self._decks.get(deck_name)
        if deck is None:
            return None
        rate = deck.match(callee)
        if rate is None:
            return None
        return PricedDestination(info=deck.info, rate=rate)
