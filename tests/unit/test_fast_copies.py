"""The hot path's hand-written copies equal ``dataclasses.replace`` and keep every field.

``with_routes`` / ``with_selection`` construct their dataclass positionally (cheaper than
``dataclasses.replace``). A field added to either class must be added there too: the
field lists below fail first.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from daemon.authorization import AuthorizationDecision, Reason, Route
from daemon.lcr_service import RouteSelection
from daemon.tariff_catalog import PricedDestination
from tariffs.deck import DeckInfo, Rate, Rounding

ROUTES = (Route("gw-a", "PJSIP/1@gw-a", Decimal("0.001")),)


def test_given_a_decision_when_copied_with_routes_then_it_equals_replace() -> None:
    assert [f.name for f in dataclasses.fields(AuthorizationDecision)] == [
        "allowed", "reason", "max_usage", "routes", "rate", "destination",
    ]  # fmt: skip
    decision = AuthorizationDecision(True, Reason.OK, 90, (), Decimal("0.012"), "US")

    assert decision.with_routes(ROUTES) == dataclasses.replace(decision, routes=ROUTES)


def test_given_a_price_when_copied_with_a_selection_then_it_equals_replace() -> None:
    assert [f.name for f in dataclasses.fields(PricedDestination)] == [
        "info", "rate", "selection", "chain", "terms", "bundle",
    ]  # fmt: skip
    info = DeckInfo(name="retail", currency="USD", rounding=Rounding.UP, decimals=6)
    priced = PricedDestination(info, Rate("1", "US", Decimal("0.012"), Decimal(0), 6, 6, 0))
    selection = RouteSelection(routes=ROUTES)

    assert priced.with_selection(selection) == dataclasses.replace(priced, selection=selection)
