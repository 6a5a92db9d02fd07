"""Bundled minutes on real Redis and SQL: the concurrency cap, settle once, restart, rollover."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from balance import keys
from balance.accounts import Account, AccountStore
from balance.bundle_store import BundleExists, BundleStore, UnknownBundle, UnknownBundleAccount
from balance.bundles import (
    BUNDLE_EXHAUSTED,
    BUNDLE_OK,
    BundleBalances,
    BundleCover,
    BundleService,
    BundleState,
    settle_call_plans,
)
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from balance.usage import TierPlanStore, TierService, UsageCounters
from daemon.cli import app
from tariffs.bundles import Bundle, bundle_seconds_for, split_call
from tariffs.deck import DeckInfo, Rate
from tariffs.tiers import Tier, TierCounter, TierMode, TierPlan, Usage
from tests.support import services

RUN = f"bundle-{uuid.uuid4().hex[:10]}"  # every account of this module starts with it
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
SLICE = 30  # seconds: one debit interval
US = Rate("1", "USA", Decimal("0.06"), initial_increment=1, subsequent_increment=1)
INFO = DeckInfo("retail")


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def balances(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[BundleBalances]:
    state = BundleBalances(redis_client, batch=request.param)
    try:
        yield state
    finally:
        await state.aclose()


def new_id() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:10]}"


async def test_given_bundle_of_k_slices_when_40_calls_reserve_at_once_then_exactly_k_on_minutes(
    balances: BundleBalances,
) -> None:
    account, k = new_id(), 7
    await balances.load(account, "na", "2026-11", allowance=k * SLICE, used=0)

    grants = await asyncio.gather(
        *(balances.reserve(account, "na", "2026-11", f"call-{i}", SLICE) for i in range(40))
    )

    on_minutes = [g for g in grants if g.ok]
    assert len(on_minutes) == k
    assert all(g.held_seconds == SLICE for g in on_minutes)
    assert {(g.reason, g.held_seconds) for g in grants if not g.ok} == {(BUNDLE_EXHAUSTED, 0)}
    assert sorted(g.available_seconds for g in on_minutes) == [n * SLICE for n in range(k)]
    state = await balances.snapshot(account, "na", "2026-11")
    assert state is not None
    assert (state.reserved, state.available, len(state.calls)) == (k * SLICE, 0, k)
    # the calls that got nothing pay with money: their price is the rate's
    assert split_call(INFO, US, SLICE, 0).cost == Decimal("0.03")
    assert split_call(INFO, US, SLICE, SLICE).cost == Decimal("0")


async def test_given_part_of_a_slice_left_when_calls_race_then_one_gets_the_rest(
    balances: BundleBalances,
) -> None:
    account, k = new_id(), 3
    await balances.load(account, "na", "2026-11", allowance=k * SLICE + 10, used=0)
    grants = await asyncio.gather(
        *(balances.reserve(account, "na", "2026-11", f"call-{i}", SLICE) for i in range(10))
    )
    assert sorted(g.held_seconds for g in grants) == [0] * 6 + [10] + [SLICE] * k
    assert sum(g.ok for g in grants) == k


async def test_given_live_calls_when_they_extend_in_rounds_then_never_more_than_the_allowance(
    balances: BundleBalances,
) -> None:
    account, allowance = new_id(), 500
    await balances.load(account, "na", "2026-11", allowance=allowance, used=0)
    held = dict.fromkeys(range(6), 0)
    for round_number in range(1, 6):  # every call asks for one more slice each round
        grants = await asyncio.gather(
            *(
                balances.reserve(account, "na", "2026-11", f"call-{i}", round_number * SLICE)
                for i in held
            )
        )
        held = {i: g.held_seconds for i, g in zip(held, grants, strict=True)}
        assert sum(held.values()) <= allowance
    assert sum(held.values()) == allowance
    # a re-sent reservation (the same total) changes nothing
    again = await balances.reserve(account, "na", "2026-11", "call-0", 5 * SLICE)
    assert again.held_seconds == held[0]
    state = await balances.snapshot(account, "na", "2026-11")
    assert state is not None and state.reserved == allowance and state.calls == {
        f"call-{i}": seconds for i, seconds in held.items() if seconds
    }


async def test_given_held_seconds_when_settled_twice_or_released_then_used_once(
    balances: BundleBalances,
) -> None:
    account = new_id()
    await balances.load(account, "eu", "2026-11", allowance=600, used=100)
    await balances.reserve(account, "eu", "2026-11", "call-1", 120)
    await balances.reserve(account, "eu", "2026-11", "call-2", 60)

    assert await balances.settle(account, "eu", "2026-11", "call-1", 75)
    assert not await balances.settle(account, "eu", "2026-11", "call-1", 75)
    assert await balances.release(account, "eu", "2026-11", "call-2") == 60
    assert await balances.release(account, "eu", "2026-11", "call-2") == -1

    assert await balances.snapshot(account, "eu", "2026-11") == BundleState(600, 175, 0, {})


async def test_given_expired_lease_when_next_reserve_then_its_seconds_return(
    redis_client: aioredis.Redis,
) -> None:
    account = new_id()
    short = BundleBalances(redis_client, lease_ttl=1, batch=False)
    await short.load(account, "na", "2026-11", allowance=60, used=0)
    assert (await short.reserve(account, "na", "2026-11", "lost-call", 60)).ok
    assert not (await short.reserve(account, "na", "2026-11", "next", 60)).ok
    await asyncio.sleep(1.1)  # let the lease expire (Redis clock)
    grant = await short.reserve(account, "na", "2026-11", "next", 60)
    assert (grant.reason, grant.held_seconds) == (BUNDLE_OK, 60)


async def test_given_unloaded_balance_when_reserved_or_settled_then_nothing_moves(
    balances: BundleBalances,
) -> None:
    account = new_id()
    grant = await balances.reserve(account, "na", "2026-11", "call-1", 60)
    assert (grant.reason, grant.held_seconds) == ("NOT_LOADED", 0)
    assert await balances.settle(account, "na", "2026-11", "call-1", 30)
    assert await balances.snapshot(account, "na", "2026-11") is None


# --- with SQL: definitions, assignments, rated calls -----------------------------------


async def account_with_bundles(engine: AsyncEngine, tz: str = "UTC") -> tuple[str, str, str]:
    """An account holding ``na`` (prefix 1, 2 min) and ``ny`` (prefix 1212, 1 min)."""
    account = new_id()
    await AccountStore(engine).create(Account(id=account, timezone=tz))
    store = BundleStore(engine)
    na, ny = f"na-{uuid.uuid4().hex[:6]}", f"ny-{uuid.uuid4().hex[:6]}"
    await store.create(Bundle(na, 120, ("1",)))
    await store.create(Bundle(ny, 60, ("1212",)))
    since = datetime(2026, 10, 1, tzinfo=UTC)
    await store.assign(account, na, since)
    await store.assign(account, ny, since)
    return account, na, ny


def rated(
    account: str, n: int, at: datetime, seconds: int, bundle: str, used: int
) -> RatedCallRecord:
    start = (at - EPOCH) // timedelta(microseconds=1)
    split = split_call(INFO, US, seconds, used)
    return RatedCallRecord(
        switch_id="pbx-1",
        call_id=f"{account}-call-{n}",
        account_id=account,
        caller="1001",
        callee="13125550100",
        started_at_us=start,
        answered_at_us=start,
        ended_at_us=start + seconds * 1_000_000,
        billsec_us=seconds * 1_000_000,
        billable_seconds=split.billable_seconds,
        cost_micros=int(split.cost * 1_000_000),
        currency="USD",
        deck="retail",
        prefix="1",
        destination="USA",
        rate_micros=60_000,
        disposition="ANSWER",
        cause="16",
        bundle=bundle,
        bundle_seconds=split.bundle_seconds,
    )


async def test_given_calls_settled_when_daemon_restarts_then_balances_rebuilt_from_sql(
    sql_engine: AsyncEngine, balances: BundleBalances, redis_client: aioredis.Redis
) -> None:
    account, na, ny = await account_with_bundles(sql_engine)
    service = BundleService(sql_engine, balances)
    assert await service.reload() >= 2
    cover = service.cover(account, "13125550100", NOV)
    assert cover == BundleCover(Bundle(na, 120, ("1",)), "1", "2026-11", "UTC")
    nyc = service.cover(account, "+12125550100", NOV)
    assert nyc is not None and nyc.bundle.name == ny  # the longest prefix among both bundles
    assert service.cover(account, "442071234567", NOV) is None

    # four calls of 45 s, one slice each then extended to 45: the bundle (120 s) runs dry
    writer, records = RatedCallWriter(sql_engine), []
    for n in range(4):
        key = f"pbx-1:{account}-call-{n}"
        first = await service.reserve(account, cover, key, SLICE)  # loads the period
        grant = await service.reserve(account, cover, key, bundle_seconds_for(US, 45))
        assert grant.held_seconds >= first.held_seconds
        records.append(rated(account, n, NOV, 45, na, grant.held_seconds))
    assert [r.bundle_seconds for r in records] == [45, 45, 30, 0]
    assert [r.cost_micros for r in records] == [0, 0, 15_000, 45_000]  # 0.001 per paid second
    fresh = await writer.write(records)
    for record, is_new in zip(records, fresh, strict=True):
        key = f"pbx-1:{record.call_id}"
        assert is_new and await service.settle_record(record, key, "UTC")
        assert not await service.settle_record(record, key, "UTC")  # once
    assert await BundleStore(sql_engine).used_seconds(account, "2026-11") == {na: 120}
    live = await balances.snapshot(account, na, "2026-11")
    assert live == BundleState(120, 120, 0, {})

    # restart: a stale hot copy is overwritten from SQL
    await balances.load(account, na, "2026-11", allowance=120, used=0)
    restarted = BundleService(sql_engine, balances)
    await restarted.reload()
    assert await restarted.rebuild({account: "UTC"}, NOV) == 2
    assert await balances.snapshot(account, na, "2026-11") == live
    # Redis lost the period: the next reservation loads it from SQL, with nothing left
    await redis_client.delete(keys.bundle_key(account, na, "2026-11"))
    grant = await restarted.reserve(account, cover, "pbx-1:late", SLICE)
    assert (grant.reason, grant.held_seconds) == (BUNDLE_EXHAUSTED, 0)
    assert await balances.snapshot(account, na, "2026-11") == live


async def test_given_bundle_used_up_in_october_when_november_starts_then_full_allowance(
    sql_engine: AsyncEngine, balances: BundleBalances
) -> None:
    account, na, _ny = await account_with_bundles(sql_engine, tz="America/New_York")
    service = BundleService(sql_engine, balances)
    await service.reload()
    tz = "America/New_York"
    october = datetime(2026, 11, 1, 3, 30, tzinfo=UTC)  # Oct 31st 23:30 in New York
    november = datetime(2026, 11, 1, 4, 30, tzinfo=UTC)  # Nov 1st 00:30 in New York
    in_october = service.cover(account, "13125550100", october, tz)
    in_november = service.cover(account, "13125550100", november, tz)
    assert in_october is not None and in_october.period == "2026-10"
    assert in_november is not None and in_november.period == "2026-11"

    assert (await service.reserve(account, in_october, "pbx-1:oct", 120)).ok
    record = rated(account, 1, october, 120, na, 120)
    assert await RatedCallWriter(sql_engine).write([record]) == [True]
    assert await service.settle_record(record, "pbx-1:oct", tz)  # the month of its start
    assert not (await service.reserve(account, in_october, "pbx-1:oct-2", 1)).ok

    grant = await service.reserve(account, in_november, "pbx-1:nov", 120)
    assert (grant.reason, grant.held_seconds, grant.available_seconds) == (BUNDLE_OK, 120, 0)
    # the rebuild of each month reads its own calls
    await service.rebuild({account: tz}, october)
    assert await balances.snapshot(account, na, "2026-10") == BundleState(120, 120, 0, {})


async def test_given_a_settlement_when_plans_settled_then_counted_once_or_released(
    sql_engine: AsyncEngine, balances: BundleBalances, redis_client: aioredis.Redis
) -> None:
    account, na, _ny = await account_with_bundles(sql_engine)
    await TierPlanStore(sql_engine).set(
        account, TierPlan("v", TierCounter.MINUTES, TierMode.ALL_UNITS, (Tier(1, Decimal(10)),))
    )
    counters = UsageCounters(redis_client, batch=False)
    tiers, bundles = TierService(sql_engine, counters), BundleService(sql_engine, balances)
    await tiers.reload()
    await bundles.reload()
    await tiers.rebuild({account: "UTC"}, NOV)
    await bundles.rebuild({account: "UTC"}, NOV)
    cover = bundles.cover(account, "13125550100", NOV)
    assert cover is not None
    await bundles.reserve(account, cover, "pbx-1:a", 90)
    await bundles.reserve(account, cover, "pbx-1:b", 30)
    first = rated(account, 1, NOV, 60, na, 90)  # held 90, used 60
    duplicate = rated(account, 2, NOV, 20, na, 30)  # seen before: nothing used again

    await settle_call_plans(first, "pbx-1:a", is_new=True, tiers=tiers, bundles=bundles)
    await settle_call_plans(duplicate, "pbx-1:b", is_new=False, tiers=tiers, bundles=bundles)

    assert await balances.snapshot(account, na, "2026-11") == BundleState(120, 60, 0, {})
    assert await tiers.usage_at(account, NOV) == Usage(1, 60)


async def test_given_assignments_when_stored_then_validity_and_errors_hold(
    sql_engine: AsyncEngine, balances: BundleBalances
) -> None:
    account, na, ny = await account_with_bundles(sql_engine)
    store = BundleStore(sql_engine)
    with pytest.raises(BundleExists):
        await store.create(Bundle(na, 60, ("1",)))
    with pytest.raises(UnknownBundle):
        await store.assign(account, "nope")
    with pytest.raises(UnknownBundleAccount):
        await store.assign("nobody", na)
    assert await store.get(na) == Bundle(na, 120, ("1",))
    end = datetime(2026, 11, 15, tzinfo=UTC)
    assert await store.unassign(account, ny, end) == 1
    assert await store.unassign(account, ny, end) == 0
    service = BundleService(sql_engine, balances)
    await service.reload()
    assert [b.name for b in service.bundles_for(account, NOV)] == [na, ny]
    assert [b.name for b in service.bundles_for(account, end)] == [na]
    assert [b.name for b in service.bundles_for(account, datetime(2026, 9, 1, tzinfo=UTC))] == []


def test_given_cli_when_bundles_created_assigned_shown_then_json_matches(
    tmp_path: Path, redis_url: str
) -> None:
    config = tmp_path / "ratekeeper.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "rk.db"}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
    )

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["--config", str(config), *args])
        return result.exit_code, result.output

    assert run("db", "upgrade")[0] == 0
    assert run("accounts", "create", "acme", "--timezone", "Europe/Paris")[0] == 0
    code, out = run("bundles", "create", "world", "--minutes", "1000", "--prefix", "1",
                    "--prefix", "44", "--json")  # fmt: skip
    assert code == 0, out
    assert json.loads(out) == [{"bundle": "world", "minutes": 1000, "prefixes": "1 44"}]
    assert run("bundles", "create", "world", "--minutes", "1", "--prefix", "1")[0] == 1
    assert run("bundles", "create", "bad", "--minutes", "1", "--prefix", "+1")[0] == 1
    code, out = run("bundles", "assign", "acme", "world", "--from", "2020-01-01")
    assert code == 0, out
    assert run("bundles", "assign", "acme", "nope")[0] == 1
    code, out = run("bundles", "show", "acme", "--json")
    assert code == 0, out
    [shown] = json.loads(out)
    assert (shown["bundle"], shown["minutes"], shown["used"], shown["left"]) == (
        "world",
        "1000",
        "0",
        "1000",
    )
    assert shown["valid_from"].startswith("2020-01-01T00:00:00")
    code, out = run("bundles", "list", "--json")
    assert code == 0 and json.loads(out)[0]["prefixes"] == "1 44"
    assert run("bundles", "unassign", "acme", "world")[0] == 0
    assert run("bundles", "unassign", "acme", "world")[0] == 1
