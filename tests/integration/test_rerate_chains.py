"""Rerating reseller-chain calls and tiered calls, on real SQL (SQLite, PostgreSQL) and Redis.

Costs are hand-computed; every deck prices 44 (UK) at 30/6 increments, so a 45 s call
bills 48 s (cost = per-minute price x 0.8):

- chain: customer -> reseller 1 (deck "wh1") -> reseller 2 (deck "wh2") -> platform.
  retail 0.12 -> 0.15 (0.096 -> 0.120, d0 = +0.024); wh1 0.08 -> 0.10 (0.064 -> 0.080,
  d1 = +0.016); wh2 0.05 (0.040), later 0.06 (0.048, d2 = +0.008).
- tiers: calls counter, all units, 10 % off from the 5th call: at usage 7 the call is
  priced at 0.108/min (0.0864), after the correction at 0.135/min (0.108, d = +0.0216);
  at usage 2 it has no discount (0.096 -> 0.120).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import AccountStore
from balance.chain_ledger import ChainCharge
from balance.ledger import SYS_REVENUE
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from balance.usage import TierPlanStore
from daemon.reseller_chain import settle_chain
from storage.tables import ledger_entries, rated_calls
from tariffs.tiers import Tier, TierCounter, TierMode, TierPlan
from tests.integration.test_rerate import TOPUP, World, _catalog, _deck, _record

T = TOPUP
RETAIL_V2 = _deck("0.15")
WH1_V1, WH1_V2 = _deck("0.08", name="wh1"), _deck("0.10", name="wh1")
WH2_V1, WH2_V2 = _deck("0.05", name="wh2"), _deck("0.06", name="wh2")


@pytest.fixture
async def world(sql_engine: AsyncEngine, redis_client: aioredis.Redis) -> World:
    return World(sql_engine, redis_client)


async def _account(world: World, parent: str | None = None, deck: str | None = None) -> str:
    account_id = await world.account()
    if parent is not None or deck is not None:
        await AccountStore(world.engine).update(account_id, parent_id=parent, rate_deck=deck)
    return account_id


async def _rated_chain(world: World, record: RatedCallRecord) -> None:
    """Write a chain call and settle it in Redis as the daemon does."""
    assert await RatedCallWriter(world.engine).write([record]) == [True]
    key = f"settle:{record.call_id}"
    await world.live.settle(record.account_id, key, record.cost_micros)
    await settle_chain(world.live, record, key, is_new=True)


async def _entries(world: World, call_id: int) -> dict[str, tuple[str, int]]:
    """The call's rerate entries: key suffix after ``rerate:{id}:`` -> (account, amount)."""
    le = ledger_entries
    query = select(le.c.idempotency_key, le.c.account_id, le.c.amount_micros).where(
        le.c.rated_call_id == call_id, le.c.kind == "adjustment"
    )
    async with world.engine.connect() as conn:
        rows = list(await conn.execute(query))
    prefix = f"rerate:{call_id}:"
    return {r.idempotency_key.removeprefix(prefix): (r.account_id, r.amount_micros) for r in rows}


async def _rated_id(world: World, record: RatedCallRecord) -> int:
    query = select(rated_calls.c.id).where(rated_calls.c.call_id == record.call_id)
    async with world.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_given_chain_call_when_retail_and_wholesale_corrected_then_each_level_adjusted(
    world: World,
) -> None:
    r2 = await _account(world, deck="wh2")
    r1 = await _account(world, parent=r2, deck="wh1")
    customer = await _account(world, parent=r1)
    chain = (ChainCharge(1, r1, 64_000, "wh1", 80_000), ChainCharge(2, r2, 40_000, "wh2", 50_000))
    record = replace(_record(customer, 1, "45"), chain=chain)
    await _rated_chain(world, record)
    revenue = await world.ledger.balance_micros(SYS_REVENUE)
    assert await world.balance(r1) == T + 96_000 - 64_000
    call_id = await _rated_id(world, record)

    report = await world.rerate(_catalog(RETAIL_V2, WH1_V2, WH2_V1), account=customer)

    assert (report.examined, report.changed, report.unchanged) == (1, 1, 0)
    assert {d.account_id: (d.calls, d.difference_micros) for d in report.differences} == {
        customer: (1, 24_000),
        r1: (1, 16_000 - 24_000),  # it pays 0.016 more and sells for 0.024 more
        r2: (1, -16_000),
    }
    assert await _entries(world, call_id) == {  # d2 = 0: no entry for reseller 2's level
        "0:account": (customer, -24_000),
        "0:sold:1": (r1, 24_000),
        "0:charge:1": (r1, -16_000),
        "0:sold:2": (r2, 16_000),
    }
    assert await world.balance(customer) == T - 120_000  # SQL = Redis
    assert await world.balance(r1) == T + 120_000 - 80_000
    assert await world.balance(r2) == T + 80_000 - 40_000
    assert await world.ledger.balance_micros(SYS_REVENUE) == revenue
    assert await world.ledger.audit() == []

    entries = await world.entry_count()
    again = await world.rerate(_catalog(RETAIL_V2, WH1_V2, WH2_V1), account=customer)
    assert (again.changed, again.unchanged, again.differences) == (0, 1, ())
    assert await world.entry_count() == entries
    assert await world.balance(r1) == T + 120_000 - 80_000

    # the platform corrects wh2: found by that deck (a reseller's), only the top level moves
    top = await world.rerate(_catalog(RETAIL_V2, WH1_V2, WH2_V2), deck="wh2")
    assert (top.examined, top.changed) == (1, 1)
    assert {k: v for k, v in (await _entries(world, call_id)).items() if k[0] == "1"} == {
        "1:charge:2": (r2, -8_000),
        "1:revenue": (SYS_REVENUE, 8_000),
    }
    assert await world.balance(customer) == T - 120_000
    assert await world.balance(r1) == T + 120_000 - 80_000
    assert await world.balance(r2) == T + 80_000 - 48_000
    assert await world.ledger.balance_micros(SYS_REVENUE) == revenue + 8_000
    assert (await world.rerate(_catalog(RETAIL_V2, WH1_V2, WH2_V2))).changed == 0
    assert await world.ledger.audit() == []


async def test_given_chain_call_when_only_retail_corrected_then_reseller_not_platform_gets_it(
    world: World,
) -> None:
    r1 = await _account(world, deck="wh1")
    customer = await _account(world, parent=r1)
    record = replace(
        _record(customer, 1, "45"), chain=(ChainCharge(1, r1, 64_000, "wh1", 80_000),)
    )
    await _rated_chain(world, record)
    revenue = await world.ledger.balance_micros(SYS_REVENUE)

    report = await world.rerate(_catalog(RETAIL_V2, WH1_V1), account=customer)

    assert report.changed == 1
    assert await world.balance(customer) == T - 120_000
    assert await world.balance(r1) == T + 120_000 - 64_000  # the retail difference is its own
    assert await world.ledger.balance_micros(SYS_REVENUE) == revenue
    assert await world.ledger.audit() == []


PLAN = TierPlan("volume", TierCounter.CALLS, TierMode.ALL_UNITS, (Tier(5, Decimal(10)),))


async def test_given_tiered_calls_when_deck_corrected_then_repriced_at_their_recorded_tier(
    world: World,
) -> None:
    acc = await world.account()
    await TierPlanStore(world.engine).set(acc, PLAN)
    at_tier = replace(_record(acc, 1, "45"), cost_micros=86_400, tier_usage=7)
    below = replace(_record(acc, 2, "45"), tier_usage=2)  # 96_000: before the first tier
    legacy = _record(acc, 3, "45")  # rated before tier_usage existed: NULL with a plan
    await world.rated(at_tier, below, legacy)
    stored = {r.call_id: r.tier_usage for r in await RatedCallWriter(world.engine).list(acc)}
    assert stored == {at_tier.call_id: 7, below.call_id: 2, legacy.call_id: None}

    report = await world.rerate(_catalog(RETAIL_V2))

    assert (report.examined, report.changed, report.skipped) == (3, 2, {"tiered": 1})
    assert {d.account_id: d.difference_micros for d in report.differences} == {
        acc: (108_000 - 86_400) + (120_000 - 96_000)
    }
    assert await world.balance(acc) == T - 108_000 - 120_000 - 96_000
    entries = await world.entry_count()
    again = await world.rerate(_catalog(RETAIL_V2))
    assert (again.changed, again.unchanged, again.skipped) == (0, 2, {"tiered": 1})
    assert await world.entry_count() == entries
    assert await world.ledger.audit() == []


async def test_given_tier_usage_when_written_then_validated_and_stored_on_both_paths(
    world: World,
) -> None:
    acc = await world.account()
    bad = replace(_record(acc, 1, "45"), tier_usage="7")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="tier_usage"):
        await RatedCallWriter(world.engine).write([bad])
    # a batch large enough for PostgreSQL's COPY path, mixing NULL and set usages
    records = [replace(_record(acc, n, "45"), tier_usage=n if n % 2 else None) for n in range(120)]
    assert all(await RatedCallWriter(world.engine).write(records))
    stored = {r.call_id: r.tier_usage for r in await RatedCallWriter(world.engine).list(acc, 200)}
    assert stored == {r.call_id: r.tier_usage for r in records}
