"""The route selector: the LCR route list of each authorized call, from memory.

``RouteSelector.reload()`` reads the carriers, the margin guards and the reseller links
from SQL and swaps them in at once (like the tariff catalog); ``select()`` then runs on
every authorization with no I/O: it resolves the account's margin guard, ranks the
enabled carriers by ``tariffs.lcr.rank_routes`` against the buy decks of the catalog,
and answers with the routes for the switch, or ``MARGIN_GUARD`` when the guard skipped
every carrier that has the destination. No carrier with the destination is NOT a denial:
the routes are empty and the switch dials its default trunk.

The :class:`RouteSelection` of a call is kept with the call (like its
``PricedDestination``): when the call ends, :meth:`RouteSelection.carrier_charge` gives
the carrier, its buy cost and the margin for the rated call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import structlog

from daemon.authorization import Reason, Route
from daemon.tariff_catalog import PricedDestination, TariffCatalog
from storage.carriers import CarrierStore, GuardBook
from tariffs.lcr import (
    Carrier,
    InvalidDialNumber,
    LcrOutcome,
    RankedRoute,
    carrier_cost,
    rank_routes,
)
from tariffs.money import to_micros

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CarrierCharge:
    """The carrier side of one rated call (the ``rated_calls`` columns, in micro-units)."""

    carrier: str = ""
    buy_cost_micros: int = 0
    margin_micros: int = 0


@dataclass(frozen=True, slots=True)
class RouteSelection:
    """The routes of one call for the switch, or the denial reason (``MARGIN_GUARD``)."""

    routes: tuple[Route, ...] = ()
    denied: Reason | None = None
    ranked: tuple[RankedRoute, ...] = ()  # the same routes with their buy rates and decks

    def carrier_charge(
        self, cost_micros: int, duration: Decimal | int, carrier: str | None = None
    ) -> CarrierCharge:
        """Carrier, buy cost and margin (``cost_micros`` - buy cost) of the finished call.

        ``carrier`` is the carrier the switch reports having used; without it (or when it
        is not one of the routes) the first route is assumed. No route: no carrier, 0, 0.
        """
        if not self.ranked:
            return CarrierCharge()
        route = self.ranked[0]
        if carrier is not None:
            route = next((r for r in self.ranked if r.carrier == carrier), route)
        buy = to_micros(carrier_cost(route, duration))
        return CarrierCharge(route.carrier, buy, cost_micros - buy)

    def starting_at(self, index: int) -> RouteSelection:
        """The same selection without its first ``index`` routes (trunks at capacity)."""
        if index <= 0:
            return self
        return RouteSelection(self.routes[index:], self.denied, self.ranked[index:])


NO_ROUTES = RouteSelection()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    carriers: tuple[Carrier, ...]
    guards: GuardBook
    by_id: dict[str, Carrier] = field(default_factory=dict)
    any_capped: bool = False


class RouteSelector:
    """LCR route lists in memory: ``select`` on every call, ``reload`` after a change."""

    def __init__(self, catalog: TariffCatalog, store: CarrierStore) -> None:
        self._catalog = catalog
        self._store = store
        self._snapshot = _Snapshot((), GuardBook())
        self.generation = 0  # bumped on every reload

    async def reload(self) -> int:
        """Load carriers, guards and reseller links from SQL; the number of enabled carriers."""
        carriers = tuple(c for c in await self._store.list() if c.enabled)
        guards = await self._store.load_guard_book()
        self._snapshot = _Snapshot(
            carriers, guards, {c.id: c for c in carriers}, any(c.capped for c in carriers)
        )
        self.generation += 1
        log.info(
            "carriers loaded",
            carriers=len(carriers),
            guards=len(guards.own) + len(guards.reseller),
        )
        return len(carriers)

    @property
    def carriers(self) -> tuple[Carrier, ...]:
        """The enabled carriers in force."""
        return self._snapshot.carriers

    @property
    def any_capped(self) -> bool:
        """Whether any enabled carrier's trunk has a cap (its calls may need a slot)."""
        return self._snapshot.any_capped

    def carrier(self, carrier_id: str) -> Carrier | None:
        """The enabled carrier with this id (its trunk caps), or None."""
        return self._snapshot.by_id.get(carrier_id)

    def select(
        self, account_id: str, callee: str, sell: PricedDestination, at: datetime
    ) -> RouteSelection:
        """The routes of a call of ``account_id`` to ``callee`` sold at ``sell`` (no I/O)."""
        snapshot = self._snapshot
        if not snapshot.carriers:
            return NO_ROUTES
        guard = snapshot.guards.guard_for(account_id)
        try:
            ranked = rank_routes(callee, sell, snapshot.carriers, self._catalog, at, guard)
        except InvalidDialNumber:
            return RouteSelection(denied=Reason.BAD_REQUEST)
        if ranked.outcome is LcrOutcome.MARGIN_GUARD:
            return RouteSelection(denied=Reason.MARGIN_GUARD)
        return RouteSelection(
            routes=tuple(Route(r.carrier, r.dial_string, r.buy_rate) for r in ranked.routes),
            ranked=ranked.routes,
        )
