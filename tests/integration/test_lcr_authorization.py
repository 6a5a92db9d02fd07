"""LCR through the real daemon: routes in the authorization answer (cheapest first), the
margin guard denying with MARGIN_GUARD before any credit is reserved, and the chosen
carrier's buy cost and the margin stored on the rated call."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select

from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from connectors.events import CallAnswered, CallEnded, CallStarted
from daemon.app import Daemon, open_resources
from daemon.settings import Settings
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from storage.carriers import CarrierStore, GuardScope
from storage.decks import DeckStore
from storage.tables import rated_calls
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.lcr import Carrier, MarginGuard
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

# sell: 0.60/min (harness deck "retail"); buy: cheap 0.30, dear 0.45, ripoff 0.70 per minute
BUY = {"cheap": "0.30", "dear": "0.45", "ripoff": "0.70"}


async def _setup_carriers(settings: Settings, guard_account: str | None = None) -> None:
    res = await open_resources(settings, migrate=False)
    try:
        decks, store = DeckStore(res.engine), CarrierStore(res.engine)
        for name, price in BUY.items():
            info = DeckInfo(name=f"buy-{name}", currency="USD", rounding=Rounding.UP, decimals=6)
            rate = Rate("1", "North America", Decimal(price), Decimal(0), 1, 1, 0)
            await decks.replace(info, [rate])
            await store.add(
                Carrier(
                    id=name,
                    name=name.title(),
                    buy_deck=f"buy-{name}",
                    dial_template="PJSIP/{number}@{carrier}",
                    priority=0,
                    weight=0,
                )
            )
        if guard_account is not None:
            # 0.60 - 0.45 = 0.15/min is too thin; only "cheap" (0.30/min margin) stays
            await store.set_guard(
                GuardScope.ACCOUNT, guard_account, MarginGuard(min_margin=Decimal("0.20"))
            )
    finally:
        await res.close()


async def _authorize(daemon: Daemon, account: str, callee: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{daemon.http_port}/v1/authorize"
    params = {"account": account, "callee": callee, "caller": "1000", "call_id": callee}
    async with httpx.AsyncClient() as client:
        response = await client.get(url, params=params)
    body: dict[str, object] = response.json()
    return body


def _routes(answer: dict[str, object]) -> list[tuple[str, str, str]]:
    routes = answer["routes"]
    assert isinstance(routes, list)
    return [(r["carrier"], r["dial_string"], r["buy_rate"]) for r in routes]


async def test_given_carriers_when_authorized_then_routes_cheapest_first_and_margin_stored(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account, guarded = f"lcr-{unique_switch_id()}", f"thin-{unique_switch_id()}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=sim.ami_port
    )
    await provision(settings, {account: Decimal("10"), guarded: Decimal("10")})
    await _setup_carriers(settings, guard_account=guarded)
    try:
        async with running_daemon(settings) as daemon:
            sim.fastagi_port = daemon.fastagi_port
            answer = await _authorize(daemon, account, "15551230001")
            thin = await _authorize(daemon, guarded, "15551230002")
            assert daemon.live is not None
            thin_snap = await daemon.live.snapshot(guarded)
            outcome = await sim.place_call(
                CallPlan(account, "15550009001", "15551239001", 0.05, 1.5)
            )
            assert daemon.sessions is not None
            sessions = daemon.sessions
            await eventually(lambda: not sessions.live_sessions())
            assert daemon.settler is not None and daemon.resources is not None
            await daemon.settler.wait_idle()
            async with daemon.resources.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(rated_calls).where(rated_calls.c.call_id == outcome.linkedid)
                    )
                ).one()
    finally:
        await sim.stop()

    assert answer["result"] == "ALLOW"
    # ordered by buy cost; the 0.70 carrier is dearer than the sell price, but this
    # account has no margin guard, so it stays, last
    assert _routes(answer) == [
        ("cheap", "PJSIP/15551230001@cheap", "0.300000"),
        ("dear", "PJSIP/15551230001@dear", "0.450000"),
        ("ripoff", "PJSIP/15551230001@ripoff", "0.700000"),
    ]
    assert thin["result"] == "ALLOW"  # only cheap leaves >= 0.20/min of margin
    assert _routes(thin) == [("cheap", "PJSIP/15551230002@cheap", "0.300000")]
    assert thin_snap is not None and len(thin_snap.calls) == 1
    # the rated call: carrier = the first route, buy = 0.30/min for the billed seconds
    assert row.carrier == "cheap"
    billed = row.billable_seconds
    assert row.buy_cost_micros == billed * 5_000  # 0.30/min = 0.005/s, 1 s increments
    assert row.margin_micros == row.cost_micros - row.buy_cost_micros > 0


async def test_given_guard_no_carrier_meets_when_authorized_then_margin_guard_and_no_reserve(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"guard-{unique_switch_id()}"
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=1
    )
    await provision(settings, {account: Decimal("10")})
    res = await open_resources(settings, migrate=False)
    try:
        await _setup_carriers(settings)
        await CarrierStore(res.engine).set_guard(
            GuardScope.ACCOUNT, account, MarginGuard(min_margin=Decimal("0.50"))
        )
    finally:
        await res.close()
    async with running_daemon(settings) as daemon:
        answer = await _authorize(daemon, account, "15551230003")
        assert daemon.live is not None
        snap = await daemon.live.snapshot(account)

    assert (answer["result"], answer["reason"]) == ("DENY", "MARGIN_GUARD")
    assert snap is not None and snap.reserved_micros == 0 and not snap.calls


async def test_given_reseller_chain_when_guarded_then_margin_is_the_platforms_not_retail(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    # the customer buys at 0.60/min retail (harness deck) from its reseller, who buys at
    # 0.40/min wholesale from the platform; carriers cost 0.30 / 0.45 / 0.70. With a
    # 0.05/min guard on the reseller's customers, measured against retail (0.60) cheap
    # (0.30) and dear (0.15) would both pass; the platform earns 0.40 - buy, so only
    # cheap (0.10) does.
    reseller, customer = f"res-{unique_switch_id()}", f"cust-{unique_switch_id()}"
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=1
    )
    await provision(settings, {reseller: Decimal("10")})
    res = await open_resources(settings, migrate=False)
    try:
        wholesale = DeckInfo(name="wholesale", currency="USD", rounding=Rounding.UP, decimals=6)
        rate = Rate("1", "North America", Decimal("0.40"), Decimal(0), 1, 1, 0)
        await DeckStore(res.engine).replace(wholesale, [rate])
        store = AccountStore(res.engine)
        await store.update(reseller, rate_deck="wholesale")
        await store.create(Account(id=customer, rate_deck="retail", parent_id=reseller))
        await Ledger(res.engine).topup(customer, Decimal("10"), f"t-{customer}")
    finally:
        await res.close()
    await _setup_carriers(settings)
    res = await open_resources(settings, migrate=False)
    try:
        await CarrierStore(res.engine).set_guard(
            GuardScope.RESELLER, reseller, MarginGuard(min_margin=Decimal("0.05"))
        )
    finally:
        await res.close()
    switch = settings.switches[0].id  # the HTTP request names no switch: the default one
    async with running_daemon(settings) as daemon:
        answer = await _authorize(daemon, customer, "15551230004")
        sessions, settler = daemon.sessions, daemon.settler
        assert sessions is not None and settler is not None and daemon.resources is not None
        ids = dict(switch_id=switch, call_id="15551230004", leg_id="15551230004",
                   channel="PJSIP/x", account=customer)  # fmt: skip
        await sessions.handle(
            CallStarted(**ids, caller="1000", callee="15551230004", at=Decimal(1795600000))
        )
        await sessions.handle(CallAnswered(**ids, at=Decimal(1795600001)))
        ended = CallEnded(
            **ids,
            caller="1000",
            callee="15551230004",
            answered=True,
            started_at=Decimal(1795600000),
            answered_at=Decimal(1795600001),
            ended_at=Decimal(1795600061),
            billsec=Decimal(60),
            cause="16",
            disposition="ANSWER",
        )
        await sessions.handle(ended)
        await settler.wait_idle()
        async with daemon.resources.engine.connect() as conn:
            row = (
                await conn.execute(select(rated_calls).where(rated_calls.c.account_id == customer))
            ).one()

    assert answer["result"] == "ALLOW"
    assert _routes(answer) == [("cheap", "PJSIP/15551230004@cheap", "0.300000")]
    # 60 s: the customer pays 0.60 retail, the platform earns 0.40 wholesale from the
    # reseller and pays the carrier 0.30: the stored margin is the platform's, 0.10
    assert (row.cost_micros, row.carrier, row.buy_cost_micros) == (600_000, "cheap", 300_000)
    assert row.margin_micros == 100_000
