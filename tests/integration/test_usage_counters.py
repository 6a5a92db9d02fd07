"""Tier counters on real Redis and SQL: exactly once per call, a restart, a month rollover."""

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
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from balance.usage import (
    CountResult,
    TierPlanStore,
    TierService,
    UnknownPlanAccount,
    UsageCounters,
    usage_from_rated_calls,
)
from daemon.cli import app
from tariffs.deck import Rate
from tariffs.tiers import Tier, TierCounter, TierMode, TierPlan, Usage, tiered_rate
from tests.support import services

RUN = f"usage-{uuid.uuid4().hex[:10]}"  # every account of this module starts with it
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
PLAN = TierPlan(
    "volume", TierCounter.MINUTES, TierMode.ALL_UNITS, (Tier(2, Decimal(20)), Tier(10, Decimal(50)))
)


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def counters(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[UsageCounters]:
    state = UsageCounters(redis_client, batch=request.param)
    try:
        yield state
    finally:
        await state.aclose()


async def new_account(engine: AsyncEngine, tz: str = "UTC") -> str:
    account = Account(id=f"{RUN}-{uuid.uuid4().hex[:10]}", timezone=tz)
    await AccountStore(engine).create(account)
    return account.id


def rated(account: str, n: int, at: datetime, seconds: int) -> RatedCallRecord:
    start = (at - EPOCH) // timedelta(microseconds=1)
    return RatedCallRecord(
        switch_id="pbx-1",
        call_id=f"{account}-call-{n}",
        account_id=account,
        caller="1001",
        callee="12125550100",
        started_at_us=start,
        answered_at_us=start if seconds else None,
        ended_at_us=start + seconds * 1_000_000,
        billsec_us=seconds * 1_000_000,
        billable_seconds=seconds,
        cost_micros=seconds * 1_000,
        currency="USD",
        deck="retail",
        prefix="1",
        destination="USA",
        rate_micros=60_000,
        disposition="ANSWER" if seconds else "NO ANSWER",
        cause="16",
    )


async def settle(
    service: TierService, writer: RatedCallWriter, records: list[RatedCallRecord], tz: str
) -> list[CountResult | None]:
    """What the settler does: write to SQL, then count only the newly written calls."""
    fresh = await writer.write(records)
    return [
        await service.count(record, tz) if is_new else None
        for record, is_new in zip(records, fresh, strict=True)
    ]


async def test_given_settled_calls_when_daemon_restarts_then_counters_rebuilt_from_sql_match(
    sql_engine: AsyncEngine, counters: UsageCounters, redis_client: aioredis.Redis
) -> None:
    account = await new_account(sql_engine)
    await TierPlanStore(sql_engine).set(account, PLAN)
    service = TierService(sql_engine, counters)
    assert await service.reload() == 1
    writer = RatedCallWriter(sql_engine)
    assert await service.usage_at(account, NOV) == Usage()  # loaded (empty) on first read

    calls = [rated(account, n, NOV + timedelta(minutes=n), 60 * (n % 3)) for n in range(9)]
    results = await settle(service, writer, calls, "UTC")
    # unanswered calls (0 s) are not counted; answered ones once
    assert results == [None if n % 3 == 0 else CountResult.COUNTED for n in range(9)]
    live = await service.usage_at(account, NOV)
    assert live == Usage(calls=6, seconds=(60 + 120) * 3)
    assert live == await usage_from_rated_calls(sql_engine, account, "2026-11")

    # the same calls again (a duplicate event): SQL says not new, nothing counted
    assert await settle(service, writer, calls, "UTC") == [None] * 9
    # and a re-sent count of a call already counted is absorbed by its marker
    assert await service.count(calls[1], "UTC") is CountResult.DUPLICATE
    assert await service.usage_at(account, NOV) == live

    # restart: a new process rebuilds from SQL and finds the same counters
    restarted = TierService(sql_engine, counters)
    await restarted.reload()
    await counters.load(account, "2026-11", Usage(99, 99))  # a stale hot copy ...
    assert await restarted.rebuild({account: "UTC"}, NOV) == 1
    assert await restarted.usage_at(account, NOV) == live  # ... overwritten from SQL
    # Redis lost the period: the first read loads it from SQL
    await redis_client.delete(keys.usage_key(account, "2026-11"))
    assert await restarted.usage_at(account, NOV) == live
    # after the restart a late duplicate still counts nothing
    assert await restarted.count(calls[2], "UTC") is CountResult.DUPLICATE
    assert await restarted.usage_at(account, NOV) == live


async def test_given_period_not_loaded_when_call_settles_then_load_from_sql_counts_it_once(
    sql_engine: AsyncEngine, counters: UsageCounters
) -> None:
    account = await new_account(sql_engine)
    await TierPlanStore(sql_engine).set(account, PLAN)
    service = TierService(sql_engine, counters)
    await service.reload()
    call = rated(account, 1, NOV, 90)
    # the period was never read: the call is in SQL, not counted in Redis
    assert await settle(service, RatedCallWriter(sql_engine), [call], "UTC") == [
        CountResult.NOT_LOADED
    ]
    assert await counters.read(account, "2026-11") is None
    assert await service.usage_at(account, NOV) == Usage(1, 90)  # loaded from SQL
    assert await service.count(call, "UTC") is CountResult.DUPLICATE  # marker kept
    assert await service.usage_at(account, NOV) == Usage(1, 90)


async def test_given_calls_around_midnight_when_month_rolls_over_then_counted_in_local_month(
    sql_engine: AsyncEngine, counters: UsageCounters
) -> None:
    account = await new_account(sql_engine, tz="Europe/Paris")
    await TierPlanStore(sql_engine).set(account, PLAN)
    service = TierService(sql_engine, counters)
    await service.reload()
    october = datetime(2026, 10, 31, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    november = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)  # 00:30 on Nov 1st in Paris
    await service.usage_at(account, october, "Europe/Paris")
    await service.usage_at(account, november, "Europe/Paris")
    calls = [rated(account, 1, october, 300), rated(account, 2, november, 60)]
    assert await settle(service, RatedCallWriter(sql_engine), calls, "Europe/Paris") == [
        CountResult.COUNTED,
        CountResult.COUNTED,
    ]
    assert await service.usage_at(account, october, "Europe/Paris") == Usage(1, 300)
    assert await service.usage_at(account, november, "Europe/Paris") == Usage(1, 60)
    # October is past the 2-minute tier, November starts again at the deck's price
    base = Rate("1", "USA", Decimal("0.10"))
    oct_usage = await service.usage_at(account, october, "Europe/Paris")
    nov_usage = await service.usage_at(account, november, "Europe/Paris")
    assert tiered_rate(PLAN, oct_usage, base).rate == Decimal("0.08")
    assert tiered_rate(PLAN, nov_usage, base).rate == Decimal("0.10")
    # the rebuild reads the same split from SQL
    await service.rebuild({account: "Europe/Paris"}, november)
    assert await service.usage_at(account, november, "Europe/Paris") == Usage(1, 60)


async def test_given_each_call_counted_twice_concurrently_then_counted_exactly_once(
    counters: UsageCounters,
) -> None:
    account = f"{RUN}-{uuid.uuid4().hex[:10]}"
    await counters.load(account, "2026-11", Usage())
    attempts = [
        counters.add(account, "2026-11", f"pbx-1:call-{n % 25}", 1, 30) for n in range(50)
    ]
    results = await asyncio.gather(*attempts)
    assert results.count(CountResult.COUNTED) == 25
    assert results.count(CountResult.DUPLICATE) == 25
    assert await counters.read(account, "2026-11") == Usage(25, 25 * 30)


async def test_given_plans_when_stored_then_read_back_and_unknown_account_refused(
    sql_engine: AsyncEngine,
) -> None:
    account = await new_account(sql_engine)
    store = TierPlanStore(sql_engine)
    graduated = TierPlan("grad", TierCounter.CALLS, TierMode.GRADUATED, (Tier(5, Decimal("12.5")),))
    await store.set(account, PLAN)
    await store.set(account, graduated)  # replaces
    assert await store.get(account) == graduated
    assert await store.load_all() == {account: graduated}
    assert await store.clear(account)
    assert not await store.clear(account)
    assert await store.get(account) is None
    with pytest.raises(UnknownPlanAccount):
        await store.set("nobody", PLAN)


def test_given_cli_when_tiers_set_shown_cleared_then_json_matches(
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
    assert run("accounts", "create", "acme")[0] == 0
    code, out = run(
        "tiers", "set", "acme", "--counter", "minutes", "--mode", "graduated",
        "--tier", "100000:20", "--tier", "200000:35.5", "--json",
    )  # fmt: skip
    assert code == 0, out
    code, out = run("tiers", "show", "acme", "--json")
    assert code == 0, out
    [shown] = json.loads(out)
    assert shown["mode"] == "graduated" and shown["counter"] == "minutes"
    assert shown["tiers"] == "100000 min: -20%, 200000 min: -35.5%"
    assert shown["used"] == "0"
    code, out = run("tiers", "set", "acme", "--tier", "10:20", "--tier", "5:30")
    assert code == 1 and "thresholds must increase" in out
    code, out = run("tiers", "set", "acme", "--tier", "ten")
    assert code == 2 and "THRESHOLD:DISCOUNT_PERCENT" in out
    assert run("tiers", "set", "ghost", "--tier", "1:1")[0] == 1
    assert run("tiers", "clear", "acme")[0] == 0
    assert run("tiers", "show", "acme")[0] == 1
