"""LCR ranking (pure): hand-computed orders and costs, the margin guard, dial templates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.tariff_catalog import PricedDestination, TariffCatalog
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.lcr import (
    Carrier,
    InvalidCarrier,
    InvalidDialNumber,
    InvalidDialTemplate,
    InvalidMarginGuard,
    LcrOutcome,
    MarginGuard,
    RankedRoute,
    RouteList,
    carrier_cost,
    check_dial_template,
    effective_guard,
    rank_routes,
    render_dial_string,
    route_order,
)
from tariffs.ratedeck import RateDeck
from tariffs.rating import call_cost

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
UK = "442079460000"
D = Decimal

# sell: 0.10 per minute, 60/60 -> the reference call (60 s) sells for 0.100000
SELL = PricedDestination(DeckInfo("retail"), Rate("44", "United Kingdom", D("0.10")))


def _deck(name: str, *rates: Rate, currency: str = "USD") -> RateDeck:
    return RateDeck(DeckInfo(name, currency=currency), rates)


# reference buy costs (60 s), by hand:
#   a: 0.020/min 60/60                       -> 0.020000
#   b: 0.010/min + 0.05 connect fee          -> 0.060000 (cheapest per minute, dearest call)
#   c: 0.030/min 1/1                         -> 0.030000
#   d: 0.015/min, first increment 90 s       -> 0.015 * 90/60 = 0.022500
#   a2: same price as a                      -> 0.020000
DECKS = TariffCatalog(
    {
        deck.info.name: deck
        for deck in (
            _deck("a", Rate("44", "UK", D("0.020"))),
            _deck("b", Rate("44", "UK", D("0.010"), connect_fee=D("0.05"))),
            _deck("c", Rate("44", "UK", D("0.030"), initial_increment=1, subsequent_increment=1)),
            _deck("d", Rate("44", "UK", D("0.015"), initial_increment=90, subsequent_increment=30)),
            _deck("a2", Rate("4420", "UK London", D("0.020"))),
            _deck("eur", Rate("44", "UK", D("0.001")), currency="EUR"),
            _deck("fr", Rate("33", "France", D("0.001"))),
        )
    }
)


def _carrier(
    cid: str, deck: str, priority: int = 0, weight: int = 0, enabled: bool = True
) -> Carrier:
    return Carrier(cid, cid.upper(), deck, "PJSIP/{number}@{carrier}", priority, weight, enabled)


def _rank(
    carriers: list[Carrier], guard: MarginGuard | None = None, callee: str = UK
) -> RouteList:
    return rank_routes(callee, SELL, carriers, DECKS, AT, guard)


CARRIERS = [_carrier("b", "b"), _carrier("c", "c"), _carrier("a", "a"), _carrier("d", "d")]


def test_given_four_carriers_when_ranked_then_ordered_by_reference_call_cost() -> None:
    ranked = _rank(CARRIERS)
    assert ranked.outcome is LcrOutcome.ROUTES
    assert [(r.carrier, r.reference_buy_cost) for r in ranked.routes] == [
        ("a", D("0.020000")),
        ("d", D("0.022500")),
        ("c", D("0.030000")),
        ("b", D("0.060000")),
    ]
    assert [r.buy_rate for r in ranked.routes] == [D("0.020"), D("0.015"), D("0.030"), D("0.010")]
    assert [r.reference_margin for r in ranked.routes] == [
        D("0.080000"),
        D("0.077500"),
        D("0.070000"),
        D("0.040000"),
    ]
    assert ranked.reference_sell_cost == D("0.100000")
    assert ranked.routes[0].dial_string == f"PJSIP/{UK}@a"


@pytest.mark.parametrize(
    ("carriers", "expected"),
    [
        # equal cost: lower priority first
        ([_carrier("x", "a", priority=1), _carrier("y", "a2", priority=0)], ["y", "x"]),
        # equal cost and priority: higher weight first
        ([_carrier("x", "a", weight=5), _carrier("y", "a2", weight=10)], ["y", "x"]),
        # everything equal: carrier id
        ([_carrier("y", "a"), _carrier("x", "a2")], ["x", "y"]),
        # cost beats priority and weight
        ([_carrier("x", "c", priority=-9, weight=99), _carrier("y", "a", priority=9)], ["y", "x"]),
    ],
)
def test_given_ties_when_ranked_then_priority_then_weight_then_id(
    carriers: list[Carrier], expected: list[str]
) -> None:
    assert [r.carrier for r in _rank(carriers).routes] == expected


def test_given_disabled_foreign_unloaded_or_unmatched_carriers_then_not_candidates() -> None:
    carriers = [
        _carrier("off", "a", enabled=False),
        _carrier("euro", "eur"),
        _carrier("gone", "no-such-deck"),
        _carrier("france", "fr"),
        _carrier("a", "a"),
    ]
    assert [r.carrier for r in _rank(carriers).routes] == ["a"]


def test_given_buy_price_change_scheduled_then_the_rate_in_force_at_call_start_counts() -> None:
    change = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    deck = _deck(
        "sched",
        Rate("44", "UK", D("0.050"), effective_to=change),
        Rate("44", "UK", D("0.001"), effective_from=change),
    )
    decks = TariffCatalog({"a": _deck("a", Rate("44", "UK", D("0.020"))), "sched": deck})
    carriers = [_carrier("a", "a"), _carrier("s", "sched")]
    before = rank_routes(UK, SELL, carriers, decks, AT)  # 10:00, before the change
    after = rank_routes(UK, SELL, carriers, decks, change)
    assert [(r.carrier, r.buy_rate) for r in before.routes] == [
        ("a", D("0.020")),
        ("s", D("0.050")),
    ]
    assert [(r.carrier, r.buy_rate) for r in after.routes] == [
        ("s", D("0.001")),
        ("a", D("0.020")),
    ]


def test_given_no_carrier_with_the_destination_then_empty_list_not_a_denial() -> None:
    ranked = _rank([_carrier("france", "fr")], MarginGuard(D("0.05")))
    assert ranked.routes == () and ranked.skipped == ()
    assert ranked.outcome is LcrOutcome.NO_CARRIER
    assert _rank([]).outcome is LcrOutcome.NO_CARRIER


@pytest.mark.parametrize(
    ("guard", "kept", "skipped"),
    [
        (MarginGuard(D("0.075")), ["a", "d"], ["c", "b"]),  # margins .08 .0775 | .07 .04
        (MarginGuard(D("0.08")), ["a"], ["d", "c", "b"]),  # equal margin passes
        (MarginGuard(min_margin_percent=D("80")), ["a"], ["d", "c", "b"]),  # 0.08 = 80 % of 0.10
        (MarginGuard(min_margin_percent=D("70.01")), ["a", "d"], ["c", "b"]),
        (MarginGuard(D("0.03"), D("77.5")), ["a", "d"], ["c", "b"]),  # both must hold
        (MarginGuard(), ["a", "d", "c", "b"], []),  # zero guard: only losses skipped
    ],
)
def test_given_margin_guard_when_ranked_then_routes_below_margin_skipped(
    guard: MarginGuard, kept: list[str], skipped: list[str]
) -> None:
    ranked = _rank(CARRIERS, guard)
    assert [r.carrier for r in ranked.routes] == kept
    assert [r.carrier for r in ranked.skipped] == skipped
    assert ranked.outcome is LcrOutcome.ROUTES


def test_given_guard_above_every_margin_then_outcome_is_margin_guard() -> None:
    ranked = _rank(CARRIERS, MarginGuard(D("0.09")))
    assert ranked.routes == ()
    assert len(ranked.skipped) == 4
    assert ranked.outcome is LcrOutcome.MARGIN_GUARD


def test_given_buy_above_sell_and_zero_guard_then_the_loss_is_skipped() -> None:
    cheap = PricedDestination(DeckInfo("retail"), Rate("44", "UK", D("0.025")))
    ranked = rank_routes(UK, cheap, CARRIERS, DECKS, AT, MarginGuard())
    assert [r.carrier for r in ranked.routes] == ["a", "d"]  # 0.0225 <= 0.025 < 0.030
    assert [r.carrier for r in rank_routes(UK, cheap, CARRIERS, DECKS, AT).routes] == [
        "a",
        "d",
        "c",
        "b",
    ]  # no guard: nothing skipped


def test_given_route_when_carrier_cost_then_buy_deck_rules_apply() -> None:
    route = next(r for r in _rank(CARRIERS).routes if r.carrier == "b")
    assert carrier_cost(route, 61) == D("0.070000")  # 0.05 + 0.010 * 120/60
    assert carrier_cost(route, 0) == D("0.000000")


def test_given_same_id_twice_when_ranked_then_refused() -> None:
    with pytest.raises(InvalidCarrier, match="twice"):
        _rank([_carrier("a", "a"), _carrier("a", "c")])


# --- dial templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "number", "dial"),
    [
        ("PJSIP/{number}@{carrier}", "+4420", "PJSIP/+4420@gw-1"),
        ("sofia/gateway/{carrier}/{number}", "4420", "sofia/gateway/gw-1/4420"),
        ("SIP/trunk/{number}", "1", "SIP/trunk/1"),
        ("sofia/external/{number}@10.0.0.1:5060;transport=tcp", "33", None),
    ],
)
def test_given_valid_template_when_rendered_then_number_and_carrier_substituted(
    template: str, number: str, dial: str | None
) -> None:
    rendered = render_dial_string(template, number, "gw-1")
    assert rendered == (dial or template.replace("{number}", number))


@pytest.mark.parametrize(
    "template",
    [
        "PJSIP/{exten}@{carrier}",  # unknown field
        "PJSIP/{number!r}@x",  # conversion
        "PJSIP/{number:>20}@x",  # format spec
        "PJSIP/{0}@x",
        "PJSIP/{}@x",
        "PJSIP/{number}@a,b",  # Dial() argument separator
        "PJSIP/{number}@a&PJSIP/{number}@b",  # Dial() parallel legs
        "sofia/gateway/a/{number}|sofia/gateway/b/{number}",  # bridge failover
        "PJSIP/{number}@${TRUNK}",  # variable
        "PJSIP/{number}@trunk x",  # whitespace
        "PJSIP/{number}@trunk\t",
        "[leg_timeout=5]sofia/gateway/a/{number}",  # FreeSWITCH per-leg variables
        "PJSIP/{{number}}@a",  # escaped braces end up in the result
        "PJSIP/{number}@a)",  # unbalances Dial()'s parentheses
        "sofia/gateway/a/{number}:_:sofia/gateway/b/{number}",
        "PJSIP/trunk",  # no {number}
        "PJSIP/{number",  # unbalanced
        "",
        "x" * 256 + "{number}",
    ],
)
def test_given_unsafe_template_when_checked_then_refused(template: str) -> None:
    with pytest.raises(InvalidDialTemplate):
        check_dial_template(template)
    with pytest.raises(InvalidCarrier, match="dial_template"):
        Carrier("gw", "gw", "deck", template)


@pytest.mark.parametrize("number", ["", "+", "44 20", "4420a", "++44", "44,1", "١٢٣"])
def test_given_bad_number_when_rendered_or_ranked_then_refused(number: str) -> None:
    with pytest.raises(InvalidDialNumber):
        render_dial_string("PJSIP/{number}", number, "gw")
    with pytest.raises(InvalidDialNumber):
        _rank(CARRIERS, callee=number)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("id", {"id": "bad id"}),
        ("id", {"id": "a/b"}),
        ("id", {"id": ""}),
        ("buy_deck", {"buy_deck": ""}),
        ("priority", {"priority": True}),
        ("weight", {"weight": -1}),
        ("enabled", {"enabled": 1}),
    ],
)
def test_given_bad_carrier_field_when_built_then_field_named(
    field: str, kwargs: dict[str, object]
) -> None:
    values: dict[str, object] = {
        "id": "gw",
        "name": "GW",
        "buy_deck": "deck",
        "dial_template": "PJSIP/{number}@{carrier}",
    }
    with pytest.raises(InvalidCarrier) as caught:
        Carrier(**(values | kwargs))  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("min_margin", "percent"),
    [(D("-0.01"), D(0)), (D("0.0000001"), D(0)), (D(0), D("100.01")), (D(0), D("1.005"))],
)
def test_given_bad_guard_when_built_then_refused(min_margin: Decimal, percent: Decimal) -> None:
    with pytest.raises(InvalidMarginGuard):
        MarginGuard(min_margin, percent)


def test_given_guards_on_a_chain_when_resolved_then_own_then_nearest_reseller() -> None:
    own = {"cust": MarginGuard(D("0.01"))}
    reseller = {"res": MarginGuard(D("0.02")), "top": MarginGuard(D("0.03"))}
    parents: dict[str, str | None] = {"cust": "res", "other": "res", "res": "top", "solo": None}
    assert effective_guard("cust", own, reseller, parents) == MarginGuard(D("0.01"))
    assert effective_guard("other", own, reseller, parents) == MarginGuard(D("0.02"))
    assert effective_guard("res", own, reseller, parents) == MarginGuard(D("0.03"))
    assert effective_guard("top", own, reseller, parents) is None  # not its own customer
    assert effective_guard("solo", own, reseller, parents) is None
    loop: dict[str, str | None] = {"x": "y", "y": "x"}
    assert effective_guard("x", {}, {}, loop) is None


# --- properties -----------------------------------------------------------------------------

_money = st.integers(min_value=0, max_value=200_000).map(lambda micros: D(micros).scaleb(-6))
_rates = st.builds(
    Rate,
    prefix=st.sampled_from(["4", "44", "4420"]),
    destination=st.just("UK"),
    rate=_money,
    connect_fee=st.one_of(st.just(D(0)), _money),
    initial_increment=st.sampled_from([1, 6, 30, 60, 90]),
    subsequent_increment=st.sampled_from([1, 6, 30, 60]),
    minimum_duration=st.sampled_from([0, 0, 30, 120]),
)
_infos = st.builds(
    DeckInfo,
    name=st.just("x"),
    rounding=st.sampled_from(list(Rounding)),
    decimals=st.integers(min_value=0, max_value=6),
)


@st.composite
def _market(draw: st.DrawFn) -> tuple[PricedDestination, list[Carrier], TariffCatalog]:
    sell_info = draw(_infos)
    sell = PricedDestination(sell_info, draw(_rates))
    count = draw(st.integers(min_value=0, max_value=8))
    decks: dict[str, RateDeck] = {}
    carriers = []
    for n in range(count):
        info = draw(_infos)
        name = f"buy{n}"
        decks[name] = RateDeck(
            DeckInfo(name, rounding=info.rounding, decimals=info.decimals), [draw(_rates)]
        )
        carriers.append(
            Carrier(
                f"c{n}",
                "",
                name,
                "sofia/gateway/{carrier}/{number}",
                priority=draw(st.integers(min_value=0, max_value=2)),
                weight=draw(st.integers(min_value=0, max_value=2)),
                enabled=draw(st.booleans()),
            )
        )
    return sell, carriers, TariffCatalog(decks)


_guards = st.one_of(
    st.none(),
    st.builds(
        MarginGuard,
        min_margin=st.integers(min_value=0, max_value=50_000).map(lambda m: D(m).scaleb(-6)),
        min_margin_percent=st.integers(min_value=0, max_value=10_000).map(
            lambda bp: D(bp).scaleb(-2)
        ),
    ),
)


def _independent_cost(route: RankedRoute) -> Decimal:
    return call_cost(route.buy_deck, route.buy, 60)


@settings(max_examples=150, deadline=None)
@given(market=_market(), guard=_guards)
def test_property_routes_ordered_by_cost_then_priority_then_weight(
    market: tuple[PricedDestination, list[Carrier], TariffCatalog], guard: MarginGuard | None
) -> None:
    sell, carriers, decks = market
    ranked = rank_routes(UK, sell, carriers, decks, AT, guard)
    for route in ranked.routes:
        assert route.reference_buy_cost == _independent_cost(route)
    for first, second in zip(ranked.routes, ranked.routes[1:], strict=False):
        assert first.reference_buy_cost <= second.reference_buy_cost
        if first.reference_buy_cost == second.reference_buy_cost:
            assert (first.priority, -first.weight, first.carrier) < (
                second.priority,
                -second.weight,
                second.carrier,
            )
    assert [route_order(r) for r in ranked.routes] == sorted(map(route_order, ranked.routes))


@settings(max_examples=150, deadline=None)
@given(market=_market(), guard=_guards)
def test_property_guard_never_lets_a_route_below_margin_through(
    market: tuple[PricedDestination, list[Carrier], TariffCatalog], guard: MarginGuard | None
) -> None:
    sell, carriers, decks = market
    ranked = rank_routes(UK, sell, carriers, decks, AT, guard)
    sell_cost = call_cost(sell.info, sell.rate, 60)
    candidates = {c.id for c in carriers if c.enabled}  # every deck has a "4..." prefix
    assert {r.carrier for r in ranked.routes} | {r.carrier for r in ranked.skipped} == candidates
    for route in ranked.routes:
        margin = sell_cost - _independent_cost(route)
        assert route.reference_margin == margin
        if guard is not None:
            assert margin >= guard.min_margin
            assert margin * 100 >= guard.min_margin_percent * sell_cost
    for route in ranked.skipped:
        assert guard is not None
        margin = sell_cost - _independent_cost(route)
        assert margin < guard.min_margin or margin * 100 < guard.min_margin_percent * sell_cost
    if ranked.outcome is LcrOutcome.MARGIN_GUARD:
        assert candidates and not ranked.routes


@settings(max_examples=100, deadline=None)
@given(market=_market(), guard=_guards, data=st.data())
def test_property_ranking_is_deterministic_whatever_the_input_order(
    market: tuple[PricedDestination, list[Carrier], TariffCatalog],
    guard: MarginGuard | None,
    data: st.DataObject,
) -> None:
    sell, carriers, decks = market
    shuffled = data.draw(st.permutations(carriers))
    assert rank_routes(UK, sell, shuffled, decks, AT, guard) == rank_routes(
        UK, sell, carriers, decks, AT, guard
    )
