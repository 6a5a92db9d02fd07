"""CarrierStore and the route selector on real SQL (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.rated_calls import InvalidRatedCall, RatedCallRecord, RatedCallWriter
from daemon.authorization import Reason, Route
from daemon.lcr_service import CarrierCharge, RouteSelector
from daemon.tariff_catalog import PricedDestination, TariffCatalog
from storage.carriers import (
    CarrierExists,
    CarrierStore,
    GuardScope,
    ScopedGuard,
    UnknownCarrier,
    UnknownGuardAccount,
)
from storage.engine import make_engine
from storage.migrate import alembic_config, current_async, upgrade_async
from tariffs.deck import DeckInfo, Rate
from tariffs.lcr import Carrier, MarginGuard
from tariffs.ratedeck import RateDeck

D = Decimal
AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
UK = "442079460000"
SELL = PricedDestination(DeckInfo("retail"), Rate("44", "United Kingdom", D("0.10")))
CATALOG = TariffCatalog(
    {
        "buy-a": RateDeck(DeckInfo("buy-a"), [Rate("44", "UK", D("0.020"))]),
        "buy-b": RateDeck(DeckInfo("buy-b"), [Rate("44", "UK", D("0.010"), D("0.05"))]),
    }
)
CARRIER_A = Carrier("a", "Alpha", "buy-a", "PJSIP/{number}@{carrier}", priority=1, weight=5)
CARRIER_B = Carrier("b", "Beta", "buy-b", "sofia/gateway/{carrier}/{number}")


async def _accounts(engine: AsyncEngine) -> None:
    store = AccountStore(engine)
    await store.create(Account("res"))
    await store.create(Account("cust", parent_id="res"))
    await store.create(Account("sub", parent_id="cust"))


async def test_given_carriers_when_added_updated_removed_then_listed_exactly(
    sql_engine: AsyncEngine,
) -> None:
    store = CarrierStore(sql_engine)
    await store.add(CARRIER_B)
    await store.add(CARRIER_A)
    assert await store.list() == [CARRIER_A, CARRIER_B]
    with pytest.raises(CarrierExists):
        await store.add(CARRIER_A)
    off = Carrier("a", "Alpha 2", "buy-b", "SIP/{number}", priority=-2, weight=0, enabled=False)
    await store.update(off)
    assert await store.get("a") == off
    await store.remove("b")
    assert await store.list() == [off]
    assert await store.get("b") is None
    with pytest.raises(UnknownCarrier):
        await store.remove("b")
    with pytest.raises(UnknownCarrier):
        await store.update(CARRIER_B)


async def test_given_guards_when_set_then_own_else_reseller_chain_else_none(
    sql_engine: AsyncEngine,
) -> None:
    await _accounts(sql_engine)
    store = CarrierStore(sql_engine)
    reseller_guard = MarginGuard(D("0.002"), D("10"))
    await store.set_guard(GuardScope.RESELLER, "res", reseller_guard)
    assert await store.effective_guard("cust") == reseller_guard
    assert await store.effective_guard("sub") == reseller_guard  # up the chain
    assert await store.effective_guard("res") is None  # a reseller guard covers customers
    own = MarginGuard(D("0.000001"), D("99.99"))
    await store.set_guard(GuardScope.ACCOUNT, "cust", own)
    assert await store.effective_guard("cust") == own
    assert await store.get_guard(GuardScope.ACCOUNT, "cust") == own  # exact round trip
    replaced = MarginGuard(D("0.5"))
    await store.set_guard(GuardScope.ACCOUNT, "cust", replaced)
    assert await store.list_guards() == [
        ScopedGuard(GuardScope.ACCOUNT, "cust", replaced),
        ScopedGuard(GuardScope.RESELLER, "res", reseller_guard),
    ]
    assert await store.clear_guard(GuardScope.ACCOUNT, "cust") is True
    assert await store.clear_guard(GuardScope.ACCOUNT, "cust") is False
    assert await store.effective_guard("cust") == reseller_guard
    with pytest.raises(UnknownGuardAccount):
        await store.set_guard(GuardScope.ACCOUNT, "nobody", own)


async def test_given_carriers_in_sql_when_selector_reloaded_then_routes_from_memory(
    sql_engine: AsyncEngine,
) -> None:
    await _accounts(sql_engine)
    store = CarrierStore(sql_engine)
    selector = RouteSelector(CATALOG, store)
    assert await selector.reload() == 0
    assert selector.select("cust", UK, SELL, AT).routes == ()  # LCR off: no routes, allowed

    await store.add(CARRIER_A)
    await store.add(CARRIER_B)
    await store.add(Carrier("off", "", "buy-a", "SIP/{number}", enabled=False))
    assert await selector.reload() == 2
    selection = selector.select("cust", UK, SELL, AT)
    assert selection.denied is None
    # reference call: a 0.020, b 0.010 + 0.05 connect fee = 0.060
    assert selection.routes == (
        Route("a", f"PJSIP/{UK}@a", D("0.020")),
        Route("b", f"sofia/gateway/b/{UK}", D("0.010")),
    )
    # the call lasted 61 s and sold for 0.200000 (cost_micros 200_000)
    assert selection.carrier_charge(200_000, 61) == CarrierCharge("a", 40_000, 160_000)
    assert selection.carrier_charge(200_000, 61, carrier="b") == CarrierCharge("b", 70_000, 130_000)

    # a reseller guard of 0.05 per minute skips b (margin 0.04) for its customers only
    await store.set_guard(GuardScope.RESELLER, "res", MarginGuard(D("0.05")))
    assert [r.carrier for r in selector.select("cust", UK, SELL, AT).routes] == ["a", "b"]
    await selector.reload()
    assert [r.carrier for r in selector.select("cust", UK, SELL, AT).routes] == ["a"]
    assert [r.carrier for r in selector.select("res", UK, SELL, AT).routes] == ["a", "b"]
    # the customer's own guard of 0.09 leaves nothing: MARGIN_GUARD
    await store.set_guard(GuardScope.ACCOUNT, "cust", MarginGuard(D("0.09")))
    await selector.reload()
    denied = selector.select("cust", UK, SELL, AT)
    assert (denied.routes, denied.denied) == ((), Reason.MARGIN_GUARD)
    assert denied.carrier_charge(100_000, 60) == CarrierCharge()
    # no carrier has France: an empty list, not a denial
    france = PricedDestination(DeckInfo("retail"), Rate("33", "France", D("0.10")))
    assert selector.select("cust", "33140000000", france, AT) == selector.select(
        "nobody", "33140000000", france, AT
    )
    assert selector.select("cust", "33140000000", france, AT).denied is None


def _rated(account: str, n: int, charge: CarrierCharge) -> RatedCallRecord:
    start = 1_700_000_000_000_000 + n * 1_000_000
    return RatedCallRecord(
        switch_id="pbx-lcr",
        call_id=f"lcr-{n}",
        account_id=account,
        caller="1001",
        callee=UK,
        started_at_us=start,
        answered_at_us=start,
        ended_at_us=start + 61_000_000,
        billsec_us=61_000_000,
        billable_seconds=120,
        cost_micros=200_000,
        currency="USD",
        deck="retail",
        prefix="44",
        destination="United Kingdom",
        rate_micros=100_000,
        disposition="ANSWERED",
        cause="16",
        carrier=charge.carrier,
        buy_cost_micros=charge.buy_cost_micros,
        margin_micros=charge.margin_micros,
    )


@pytest.mark.parametrize("batch", [3, 120])  # PostgreSQL: column arrays, then COPY
async def test_given_rated_calls_with_carrier_when_written_then_carrier_cost_margin_kept(
    sql_engine: AsyncEngine, batch: int
) -> None:
    await AccountStore(sql_engine).create(Account("lcr-acc"))
    charges = [
        CarrierCharge(),
        CarrierCharge("b", 70_000, 130_000),
        CarrierCharge("x", 250_000, -50_000),  # a loss: the margin is negative
    ]
    records = [_rated("lcr-acc", n, charges[n % 3]) for n in range(batch)]
    writer = RatedCallWriter(sql_engine)
    assert await writer.write(records) == [True] * batch
    for n in (0, 1, 2):
        assert await writer.get("pbx-lcr", f"lcr-{n}") == records[n]
    too_long = replace(records[0], call_id="lcr-long", carrier="c" * 65)
    with pytest.raises(InvalidRatedCall, match="carrier"):
        await writer.write([too_long])


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    config = alembic_config()

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def test_given_calls_rated_before_0004_when_upgraded_then_defaults_and_downgrade_works(
    sql_url: str,
) -> None:
    engine = make_engine(sql_url)
    try:
        await upgrade_async(engine, "0003")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO rated_calls (switch_id, call_id, account_id, caller, callee, "
                    "started_at_us, answered_at_us, ended_at_us, billsec_us, billable_seconds, "
                    "cost_micros, currency, deck, prefix, destination, rate_micros, "
                    "disposition, cause, rated_at) VALUES ('pbx', 'old', 'acc', '1', '44', "
                    "1, 1, 2, 1, 60, 500, 'USD', 'retail', '44', 'UK', 500, 'ANSWERED', '16', "
                    ":now)"
                ),
                {"now": datetime(2026, 1, 1)},
            )
        await upgrade_async(engine)  # to the head: 0004 and every later migration
        old = await RatedCallWriter(engine).get("pbx", "old")
        assert old is not None
        assert (old.carrier, old.buy_cost_micros, old.margin_micros) == ("", 0, 0)
        await _downgrade(engine, "0003")
        assert await current_async(engine) == "0003"
        await upgrade_async(engine, "0004")
        assert await current_async(engine) == "0004"
    finally:
        await engine.dispose()
