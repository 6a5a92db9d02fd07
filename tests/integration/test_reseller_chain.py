"""Reseller chains: retail and wholesale in one ledger transaction, a reservation on every
account of the chain, the shortest max_usage, exactly-once at every level (real Redis,
both SQL backends, the real daemon and simulated Asterisk for one end-to-end call).

Decks (prefix 44, no connect fee), hand-computed costs:
    retail       1.20/min, 60/60    the customers' price, set by their reseller
    sub          0.90/min, 6/6      the sub-reseller's price from the top reseller
    wholesale    0.60/min, 1/1      the top reseller's price from the platform
A 90 s call: retail 120 s = 2.40, wholesale 90 s = 0.90.
A 61 s call: retail 120 s = 2.40, sub 66 s = 0.99, wholesale 61 s = 0.61.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.chain_ledger import ChainCharge, chain_of
from balance.ledger import SYS_REVENUE, Ledger
from balance.live import LiveState
from balance.rated_calls import RatedCallWriter
from connectors.events import CallAnswered, CallEnded, CallStarted
from daemon.account_directory import AccountDirectory
from daemon.app import load_catalog, open_resources, rebuild_live_state
from daemon.authorization import AuthorizationRequest, Reason
from daemon.authorization_service import AuthorizationPolicy, AuthorizationService
from daemon.sessions import SessionManager
from daemon.settlement import Settler
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from storage.decks import DeckStore
from storage.tables import ledger_entries
from tariffs.deck import DeckInfo, Rate, Rounding
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

SLICE = 30  # debit_interval: the first slice reserved at authorization
DECKS = {
    "retail": ("1.20", 60, 60),
    "sub": ("0.90", 6, 6),
    "wholesale": ("0.60", 1, 1),
}


def _deck(name: str, price: str, first: int, next_: int, prefix: str = "44") -> tuple[
    DeckInfo, list[Rate]
]:
    info = DeckInfo(name=name, currency="USD", rounding=Rounding.UP, decimals=6)
    return info, [Rate(prefix, "United Kingdom", Decimal(price), Decimal(0), first, next_, 0)]


@dataclass
class World:
    """Accounts, decks, live state and the real services on one SQL database and Redis."""

    engine: AsyncEngine
    redis: aioredis.Redis
    tag: str
    live: LiveState | None = None
    service: AuthorizationService | None = None
    settler: Settler | None = None
    sessions: SessionManager | None = None
    switch_id: str = ""

    def id(self, name: str) -> str:
        return f"{name}-{self.tag}"

    async def account(
        self, name: str, deck: str, parent: str | None = None, topup: str = "0", **extra: object
    ) -> str:
        account_id = self.id(name)
        parent_id = None if parent is None else self.id(parent)
        await AccountStore(self.engine).create(
            Account(id=account_id, rate_deck=deck, parent_id=parent_id, **extra)  # type: ignore[arg-type]
        )
        if Decimal(topup):
            await Ledger(self.engine).topup(account_id, Decimal(topup), f"init-{account_id}")
        return account_id

    async def start(self) -> None:
        """Load everything as the daemon does at start (a 'restart' when called again)."""
        decks = DeckStore(self.engine)
        for name, (price, first, next_) in DECKS.items():
            if await decks.load(name) is None:
                await decks.replace(*_deck(name, price, first, next_))
        self.live = live = LiveState(self.redis, batch=False)
        store = AccountStore(self.engine)
        await rebuild_live_state(await store.list(), Ledger(self.engine), live)
        directory = AccountDirectory(store)
        await directory.load()
        catalog = await load_catalog(decks)
        policy = AuthorizationPolicy(debit_interval=SLICE, max_call_duration=3600)
        self.service = AuthorizationService(directory, catalog, live, policy)
        self.settler = Settler(RatedCallWriter(self.engine), live, batch_delay=0.001)
        self.settler.start()
        self.sessions = SessionManager(
            authorizer=self.service, live=live, settler=self.settler, controls={},
            debit_interval=SLICE,
        )  # fmt: skip

    async def stop(self) -> None:
        assert self.sessions is not None and self.settler is not None and self.live is not None
        await self.sessions.close()
        await self.settler.close()
        await self.live.aclose()

    async def authorize(self, account: str, call_id: str, callee: str = "442071234567"):  # type: ignore[no-untyped-def]
        assert self.service is not None
        return await self.service.authorize(
            AuthorizationRequest(self.switch_id, call_id, account, "1000", callee)
        )

    def ended(self, account: str, call_id: str, talk: int) -> CallEnded:
        start = Decimal(1_760_000_000)
        return CallEnded(
            switch_id=self.switch_id, call_id=call_id, leg_id=call_id, channel=f"SIP/{call_id}",
            account=account, caller="1000", callee="442071234567", answered=True,
            started_at=start, answered_at=start + 2, ended_at=start + 2 + talk,
            billsec=Decimal(talk), cause="16", disposition="ANSWER",
        )  # fmt: skip

    async def call(self, account: str, call_id: str, talk: int) -> None:
        """Authorize, start, answer and end one call; wait until it is settled."""
        assert self.sessions is not None and self.settler is not None
        decision = await self.authorize(account, call_id)
        assert decision.allowed, decision.reason
        ended = self.ended(account, call_id, talk)
        await self.sessions.handle(
            CallStarted(self.switch_id, call_id, call_id, ended.channel, account, "1000",
                        ended.callee, ended.started_at)
        )  # fmt: skip
        assert ended.answered_at is not None
        await self.sessions.handle(
            CallAnswered(self.switch_id, call_id, call_id, ended.channel, account,
                         ended.answered_at)
        )  # fmt: skip
        await self.sessions.handle(ended)
        await self.settler.wait_idle()

    async def entries(self, call_id: str) -> list[tuple[str, str, int]]:
        txn = f"call:{self.switch_id}:{call_id}"
        query = (
            select(ledger_entries.c.idempotency_key, ledger_entries.c.account_id,
                   ledger_entries.c.amount_micros)
            .where(ledger_entries.c.txn_key == txn)
            .order_by(ledger_entries.c.idempotency_key)
        )  # fmt: skip
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [(r[0].removeprefix(txn + ":"), r[1], r[2]) for r in rows]

    async def assert_hot_equals_sql(self, *accounts: str) -> None:
        """I4 in Redis too: every hot balance equals its ledger balance, nothing reserved."""
        assert self.live is not None
        ledger = Ledger(self.engine)
        for account in accounts:
            snap = await self.live.snapshot(account)
            assert snap is not None
            assert (snap.balance_micros, snap.reserved_micros) == (
                await ledger.balance_micros(account), 0
            ), account


@pytest.fixture
async def world(sql_engine: AsyncEngine, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    w = World(sql_engine, redis_client, uuid.uuid4().hex[:8], switch_id=unique_switch_id())
    yield w
    if w.sessions is not None:
        await w.stop()


async def test_given_two_level_chain_when_call_ends_then_retail_and_wholesale_in_one_txn(
    world: World,
) -> None:
    reseller = await world.account("res", "wholesale", topup="5")
    customer = await world.account("cust", "retail", parent="res", topup="10")
    await world.start()

    await world.call(customer, "c1", talk=90)

    assert await world.entries("c1") == [
        ("charge", customer, -2_400_000),
        ("charge:1", reseller, -900_000),
        ("revenue", SYS_REVENUE, 900_000),
        ("sold:1", reseller, 2_400_000),
    ]
    assert await chain_of(world.engine, world.switch_id, "c1") == (
        ChainCharge(1, reseller, 900_000, "wholesale", 600_000),
    )
    ledger = Ledger(world.engine)
    assert await ledger.audit() == []
    assert await ledger.balance_micros(customer) == 10_000_000 - 2_400_000
    assert await ledger.balance_micros(reseller) == 5_000_000 + 2_400_000 - 900_000
    assert await ledger.balance_micros(SYS_REVENUE) == 900_000
    await world.assert_hot_equals_sql(customer, reseller)


async def test_given_three_level_chain_when_replayed_after_restart_then_charged_once(
    world: World,
) -> None:
    top = await world.account("top", "wholesale", topup="5")
    sub = await world.account("sub", "sub", parent="top", topup="5")
    customer = await world.account("cust", "retail", parent="sub", topup="10")
    await world.start()

    await world.call(customer, "c3", talk=61)
    expected = [
        ("charge", customer, -2_400_000),
        ("charge:1", sub, -990_000),
        ("charge:2", top, -610_000),
        ("revenue", SYS_REVENUE, 610_000),
        ("sold:1", sub, 2_400_000),
        ("sold:2", top, 990_000),
    ]
    assert await world.entries("c3") == expected
    assert await chain_of(world.engine, world.switch_id, "c3") == (
        ChainCharge(1, sub, 990_000, "sub", 900_000),
        ChainCharge(2, top, 610_000, "wholesale", 600_000),
    )
    balances = {
        customer: 10_000_000 - 2_400_000,
        sub: 5_000_000 + 2_400_000 - 990_000,
        top: 5_000_000 + 990_000 - 610_000,
        SYS_REVENUE: 610_000,
    }
    ledger = Ledger(world.engine)
    assert {a: await ledger.balance_micros(a) for a in balances} == balances

    # restart: new services, hot state rebuilt from SQL, the same end replayed twice
    await world.stop()
    await world.start()
    assert world.sessions is not None and world.settler is not None
    await world.sessions.handle(world.ended(customer, "c3", talk=61))
    await world.sessions.handle(world.ended(customer, "c3", talk=61))
    await world.settler.wait_idle()

    assert world.settler.duplicates == 2 and world.settler.written == 0
    assert await world.entries("c3") == expected
    assert {a: await ledger.balance_micros(a) for a in balances} == balances
    assert await ledger.audit() == []
    await world.assert_hot_equals_sql(customer, sub, top)


async def test_given_reseller_credit_for_k_slices_when_n_parallel_calls_then_exactly_k_pass(
    world: World,
) -> None:
    k, n = 3, 12
    # a wholesale first slice: 30 s at 0.60/min = 0.30; exactly k of them, nothing left
    reseller = await world.account("res", "wholesale", topup=str(Decimal("0.30") * k))
    customers = [
        await world.account(f"cust{i}", "retail", parent="res", topup="100") for i in range(4)
    ]
    await world.start()

    decisions = await asyncio.gather(
        *(world.authorize(customers[i % 4], f"par-{i}") for i in range(n))
    )

    assert sum(d.allowed for d in decisions) == k
    assert {d.reason for d in decisions if not d.allowed} == {Reason.INSUFFICIENT_CREDIT}
    assert world.live is not None
    snap = await world.live.snapshot(reseller)
    assert snap is not None and snap.reserved_micros == 300_000 * k and len(snap.calls) == k
    # the denied calls' customer reservations were released: only the allowed ones hold
    held = 0
    for customer in customers:
        customer_snap = await world.live.snapshot(customer)
        assert customer_snap is not None
        held += len(customer_snap.calls)
        # a retail first slice: 30 s in 60 s blocks at 1.20/min = 1.20
        assert customer_snap.reserved_micros == 1_200_000 * len(customer_snap.calls)
    assert held == k


async def test_given_chain_when_authorized_then_max_usage_is_the_shortest(
    world: World,
) -> None:
    await world.account("poor-res", "wholesale", topup="0.12")  # 12 s at 0.60/min
    rich_cust = await world.account("rich", "retail", parent="poor-res", topup="100")
    await world.account("rich-res", "wholesale", topup="100")
    poor_cust = await world.account("poor", "retail", parent="rich-res", topup="1.30")
    await world.start()

    reseller_bound = await world.authorize(rich_cust, "short-1")
    customer_bound = await world.authorize(poor_cust, "short-2")

    assert (reseller_bound.allowed, reseller_bound.max_usage) == (True, 12)
    # 1.30 at 1.20/min in 60 s blocks: one minute; the reseller could pay an hour
    assert (customer_bound.allowed, customer_bound.max_usage) == (True, 60)


async def test_given_reseller_that_cannot_pay_when_authorized_then_customer_released(
    world: World,
) -> None:
    await world.account("broke", "wholesale", topup="0")
    await world.account("frozen", "wholesale", topup="50", status="suspended")
    await world.account("postpaid", "wholesale", billing="postpaid", credit_limit_micros=300_000)
    broke_cust = await world.account("c-broke", "retail", parent="broke", topup="10")
    frozen_cust = await world.account("c-frozen", "retail", parent="frozen", topup="10")
    post_cust = await world.account("c-post", "retail", parent="postpaid", topup="10")
    await world.start()

    broke = await world.authorize(broke_cust, "deny-1")
    frozen = await world.authorize(frozen_cust, "deny-2")
    post_first = await world.authorize(post_cust, "post-1")  # 0.30 of credit: one slice
    post_second = await world.authorize(post_cust, "post-2")

    assert (broke.allowed, broke.reason) == (False, Reason.INSUFFICIENT_CREDIT)
    assert (frozen.allowed, frozen.reason) == (False, Reason.ACCOUNT_SUSPENDED)
    assert post_first.allowed and post_first.max_usage == 30
    assert (post_second.allowed, post_second.reason) == (False, Reason.INSUFFICIENT_CREDIT)
    assert world.live is not None
    for customer, holds in ((broke_cust, 0), (frozen_cust, 0), (post_cust, 1)):
        snap = await world.live.snapshot(customer)
        assert snap is not None
        assert (len(snap.calls), snap.reserved_micros) == (holds, 1_200_000 * holds), customer


async def test_given_reseller_deck_without_the_destination_when_authorized_then_no_rate(
    world: World,
) -> None:
    assert DECKS  # the wholesale deck only has 44
    await world.account("res", "wholesale", topup="10")
    customer = await world.account("cust", "retail", parent="res", topup="10")
    await world.start()
    assert world.service is not None
    await DeckStore(world.engine).replace(
        *_deck("retail", "1.20", 60, 60, prefix="33")
    )  # the customer's deck gains France...
    await world.service.catalog.reload(DeckStore(world.engine), "retail")

    decision = await world.authorize(customer, "fr-1", callee="33123456789")

    assert (decision.allowed, decision.reason) == (False, Reason.NO_RATE)  # ...its reseller not


async def test_given_chain_when_call_through_real_daemon_then_every_level_settled(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    tag, switch_id = unique_switch_id(), unique_switch_id()
    reseller, customer = f"e2e-res-{tag}", f"e2e-cust-{tag}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=switch_id, ami_port=sim.ami_port
    )
    await provision(settings, {})  # the harness deck "retail": prefix 1, 0.60/min, 1/1
    res = await open_resources(settings, migrate=False)
    try:
        info, rates = _deck("wholesale-1", "0.30", 1, 1, prefix="1")
        await DeckStore(res.engine).replace(info, rates)
        store, ledger = AccountStore(res.engine), Ledger(res.engine)
        await store.create(Account(id=reseller, rate_deck="wholesale-1"))
        await store.create(Account(id=customer, rate_deck="retail", parent_id=reseller))
        await ledger.topup(reseller, Decimal("5"), f"init-{reseller}")
        await ledger.topup(customer, Decimal("5"), f"init-{customer}")
    finally:
        await res.close()
    try:
        async with running_daemon(settings) as daemon:
            sim.fastagi_port = daemon.fastagi_port
            outcome = await sim.place_call(
                CallPlan(customer, "15550009001", "15551239001", 0.05, 1.5)
            )
            assert daemon.sessions is not None and daemon.settler is not None
            sessions = daemon.sessions
            await eventually(lambda: not sessions.live_sessions())
            await daemon.settler.wait_idle()
            assert daemon.resources is not None and daemon.live is not None
            engine = daemon.resources.engine
            record = await RatedCallWriter(engine).get(switch_id, outcome.linkedid)
            chain = await chain_of(engine, switch_id, outcome.linkedid)
            ledger = Ledger(engine)
            problems = await ledger.audit()
            balances = {a: await ledger.balance_micros(a) for a in (customer, reseller)}
            hot = {a: await daemon.live.snapshot(a) for a in (customer, reseller)}
    finally:
        await sim.stop()

    assert outcome.authorized and record is not None and record.billable_seconds >= 1
    retail, wholesale = record.billable_seconds * 10_000, record.billable_seconds * 5_000
    assert record.cost_micros == retail
    assert chain == (ChainCharge(1, reseller, wholesale, "wholesale-1", 300_000),)
    assert problems == []
    assert balances == {customer: 5_000_000 - retail, reseller: 5_000_000 + retail - wholesale}
    for account, snap in hot.items():
        assert snap is not None
        assert (snap.balance_micros, snap.reserved_micros) == (balances[account], 0)

