"""Rerating against real SQL (SQLite, PostgreSQL) and real Redis: differences posted once.

Costs are hand-computed. Deck "retail" prices 44 (UK) at 30/6 increments:
v1 0.12/min, v2 0.15/min (corrected up), v3 0.09/min (corrected down).
A call of 45 s bills 48 s (30 + 3 x 6): 0.096 / 0.120 / 0.072.
A call of 125.5 s bills 126 s (30 + 16 x 6): 0.252 / 0.315 / 0.189.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from balance.accounts import Account, AccountStore
from balance.ledger import SYS_REVENUE, Ledger
from balance.live import AccountLimits, LiveState
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from balance.rerate import InvalidWindow, RepriceFailed, Rerater, RerateReport
from daemon.tariff_catalog import TariffCatalog
from storage.tables import ledger_entries, rated_calls
from tariffs.deck import DeckInfo, Rate
from tariffs.money import to_micros
from tariffs.ratedeck import RateDeck
from tariffs.rating import call_cost

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
NOV_US = 1_793_491_200_000_000  # 2026-11-01T00:00:00Z in epoch microseconds
TOPUP = 10_000_000


def _deck(per_minute: str, name: str = "retail", currency: str = "USD", **extra: Rate) -> RateDeck:
    rates = [Rate("44", "United Kingdom", Decimal(per_minute), Decimal(0), 30, 6)]
    return RateDeck(DeckInfo(name, currency=currency), [*rates, *extra.values()])


def _catalog(*decks: RateDeck) -> TariffCatalog:
    return TariffCatalog({deck.info.name: deck for deck in decks})


V1, V2, V3 = _deck("0.12"), _deck("0.15"), _deck("0.09")


def _record(
    account: str,
    n: int,
    billsec: str,
    *,
    deck: RateDeck | None = V1,
    callee: str = "442071234567",
    at_us: int | None = None,
) -> RatedCallRecord:
    """A call rated with ``deck`` (None: never priced), as the daemon writes it."""
    start = NOV_US + n * 1_000_000 if at_us is None else at_us
    seconds = Decimal(billsec)
    priced = deck.match(callee) if deck is not None else None
    cost = 0 if deck is None or priced is None else to_micros(call_cost(deck.info, priced, seconds))
    return RatedCallRecord(
        switch_id="pbx-1",
        call_id=f"{account}-{n}",
        account_id=account,
        caller="1001",
        callee=callee,
        started_at_us=start,
        answered_at_us=start + 1_000_000 if seconds else None,
        ended_at_us=start + 1_000_000 + int(seconds * 1_000_000),
        billsec_us=int(seconds * 1_000_000),
        billable_seconds=0,
        cost_micros=cost,
        currency="USD" if deck is None else deck.info.currency,
        deck="" if deck is None else deck.info.name,
        prefix="" if priced is None else priced.prefix,
        destination="" if priced is None else priced.destination,
        rate_micros=0 if priced is None else to_micros(priced.rate),
        disposition="ANSWERED" if seconds else "NO ANSWER",
        cause="16",
    )


class World:
    """Accounts topped up, calls rated and settled, the live state loaded from SQL."""

    def __init__(self, engine: AsyncEngine, redis: aioredis.Redis) -> None:
        self.engine = engine
        self.ledger = Ledger(engine)
        self.live = LiveState(redis, batch=False)

    async def account(self) -> str:
        account_id = f"rr-{uuid.uuid4().hex[:10]}"
        await AccountStore(self.engine).create(Account(id=account_id))
        await self.ledger.topup(account_id, Decimal(TOPUP) / 1_000_000, f"t-{account_id}")
        await self.live.load_account(AccountLimits(account_id, "active", TOPUP, 0, None))
        return account_id

    async def rated(self, *records: RatedCallRecord) -> None:
        assert all(await RatedCallWriter(self.engine).write(records))
        for record in records:  # the daemon's settlement of each new call
            key = f"settle:{record.call_id}"
            await self.live.settle(record.account_id, key, record.cost_micros)

    async def rerate(
        self,
        catalog: TariffCatalog,
        *,
        since: datetime = NOV,
        until: datetime = DEC,
        account: str | None = None,
        deck: str | None = None,
        dry_run: bool = False,
        chunk_size: int = 500,
    ) -> RerateReport:
        return await Rerater(self.engine, self.live, chunk_size=chunk_size).rerate(
            since=since, until=until, account=account, deck=deck, catalog=catalog, dry_run=dry_run
        )

    async def balance(self, account: str) -> int:
        """The SQL balance, after checking Redis holds the same (a daemon would see it)."""
        sql = await self.ledger.balance_micros(account)
        snapshot = await self.live.snapshot(account)
        assert snapshot is not None and snapshot.balance_micros == sql
        return sql

    async def adjustments(self, account: str) -> list[tuple[int, int]]:
        """(rated call id, amount) of the account's adjustment entries, oldest first."""
        entries = await self.ledger.entries(account, limit=1_000)
        adjustments = [e for e in reversed(entries) if e.kind == "adjustment"]
        return [(e.rated_call_id or 0, e.amount_micros) for e in adjustments]

    async def entry_count(self) -> int:
        query = select(func.count()).select_from(ledger_entries)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


@pytest.fixture
async def world(sql_engine: AsyncEngine, redis_client: aioredis.Redis) -> World:
    return World(sql_engine, redis_client)


def _totals(report: RerateReport) -> dict[str, tuple[int, int]]:
    return {d.account_id: (d.calls, d.difference_micros) for d in report.differences}


async def test_given_price_corrected_up_when_rerated_then_difference_debited_once(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(_record(acc, 1, "45"), _record(acc, 2, "125.5"), _record(acc, 3, "0"))
    assert await world.balance(acc) == TOPUP - 96_000 - 252_000

    report = await world.rerate(_catalog(V2))

    assert (report.examined, report.changed, report.unchanged, report.raced) == (3, 2, 1, 0)
    assert _totals(report) == {acc: (2, 24_000 + 63_000)}
    assert await world.balance(acc) == TOPUP - 120_000 - 315_000  # I4, in SQL and Redis
    assert [amount for _, amount in await world.adjustments(acc)] == [-24_000, -63_000]
    [entry, *_] = [e for e in await world.ledger.entries(acc) if e.kind == "adjustment"]
    assert entry.description.startswith("rerate retail 44 United Kingdom: 0.252000 -> 0.315000")
    assert entry.txn_key.startswith("rerate:")
    assert await world.ledger.balance_micros(SYS_REVENUE) >= 435_000
    async with world.engine.connect() as conn:  # the rated calls themselves are untouched
        costs = (await conn.execute(select(rated_calls.c.cost_micros).order_by("id"))).scalars()
        assert list(costs) == [96_000, 252_000, 0]
    assert await world.ledger.audit() == []


async def test_given_price_corrected_down_when_rerated_then_difference_refunded(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(_record(acc, 1, "45"), _record(acc, 2, "125.5"))
    report = await world.rerate(_catalog(V3))
    assert _totals(report) == {acc: (2, -24_000 - 63_000)}
    assert await world.balance(acc) == TOPUP - 72_000 - 189_000
    assert [amount for _, amount in await world.adjustments(acc)] == [24_000, 63_000]
    assert await world.ledger.audit() == []


async def test_given_rerated_when_rerated_again_then_nothing_changes(world: World) -> None:
    acc = await world.account()
    await world.rated(_record(acc, 1, "45"), _record(acc, 2, "125.5"))
    await world.rerate(_catalog(V2))
    entries = await world.entry_count()

    again = await world.rerate(_catalog(V2))

    assert (again.examined, again.changed, again.unchanged, again.differences) == (2, 0, 2, ())
    assert await world.entry_count() == entries
    assert await world.balance(acc) == TOPUP - 120_000 - 315_000


async def test_given_second_correction_when_rerated_then_only_new_difference_posted(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(_record(acc, 1, "45"), _record(acc, 2, "125.5"))
    await world.rerate(_catalog(V2))
    report = await world.rerate(_catalog(V3))  # 0.15 -> 0.09: from the corrected price
    assert _totals(report) == {acc: (2, (72_000 - 120_000) + (189_000 - 315_000))}
    assert await world.balance(acc) == TOPUP - 72_000 - 189_000
    # a correction reverted and made again is applied every time (one slot per change)
    for catalog, cost in ((V1, 96_000 + 252_000), (V3, 72_000 + 189_000), (V1, 348_000)):
        await world.rerate(_catalog(catalog))
        assert await world.balance(acc) == TOPUP - cost
    assert len(await world.adjustments(acc)) == 2 * 5
    assert await world.ledger.audit() == []


async def test_given_filters_when_rerated_then_only_matching_calls_change(world: World) -> None:
    acc, other = await world.account(), await world.account()
    wholesale_v1 = _deck("0.12", name="wholesale")
    await world.rated(
        _record(acc, 1, "45"),
        _record(acc, 2, "45", deck=wholesale_v1),
        _record(other, 1, "45"),
        _record(acc, 3, "45", at_us=NOV_US - 1),  # before the window
        _record(acc, 4, "45", at_us=NOV_US + 30 * 86_400 * 1_000_000),  # at its (open) end
    )
    catalog = _catalog(V2, _deck("0.15", name="wholesale"))

    by_deck = await world.rerate(catalog, account=acc, deck="retail")
    assert (by_deck.examined, _totals(by_deck)) == (1, {acc: (1, 24_000)})
    by_account = await world.rerate(catalog, account=acc)
    assert (by_account.examined, _totals(by_account)) == (2, {acc: (1, 24_000)})  # wholesale
    assert await world.balance(other) == TOPUP - 96_000
    everyone = await world.rerate(catalog, since=datetime(2026, 10, 31, 23, tzinfo=UTC))
    assert _totals(everyone) == {acc: (1, 24_000), other: (1, 24_000)}  # call 3, other's call
    assert await world.balance(acc) == TOPUP - 3 * 120_000 - 96_000  # call 4 never rerated


async def test_given_dry_run_when_rerated_then_report_only_and_nothing_written(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(_record(acc, 1, "45"), _record(acc, 2, "125.5"))
    entries, balance = await world.entry_count(), await world.balance(acc)

    report = await world.rerate(_catalog(V2), dry_run=True)

    assert report.dry_run and _totals(report) == {acc: (2, 87_000)}
    assert await world.entry_count() == entries
    assert await world.balance(acc) == balance
    assert _totals(await world.rerate(_catalog(V2))) == {acc: (2, 87_000)}


async def test_given_unanswered_free_and_unpriceable_calls_when_rerated_then_handled(
    world: World,
) -> None:
    acc = await world.account()
    free = Rate("800", "Freephone", Decimal(0), Decimal(0), 1, 1)
    paid = Rate("800", "Freephone", Decimal("0.06"), Decimal(0), 1, 1)
    france = Rate("33", "France", Decimal("0.2"), Decimal(0), 60, 60)
    await world.rated(
        _record(acc, 1, "0"),  # unanswered: free under any deck
        _record(acc, 2, "30", callee="80012345", deck=_deck("0.12", f=free)),  # cost 0
        _record(acc, 3, "30", deck=None),  # never priced
        _record(acc, 4, "30", callee="3312345", deck=_deck("0.12", f=france)),  # 0.20
        _record(acc, 5, "45", deck=_deck("0.12", name="eur", currency="EUR")),  # 0.096 EUR
    )
    # now: freephone is paid, France is gone from the deck, deck "eur" bills in USD
    catalog = _catalog(_deck("0.12", f=paid), _deck("0.12", name="eur", currency="USD"))

    report = await world.rerate(catalog)

    assert report.skipped == {"currency": 1, "no_deck": 1, "no_rate": 1}
    assert (report.examined, report.changed, report.unchanged) == (5, 1, 1)
    assert _totals(report) == {acc: (1, 30_000)}  # 30 s of freephone at 0.06 now
    assert await world.balance(acc) == TOPUP - 200_000 - 96_000 - 30_000
    assert await world.ledger.audit() == []


async def test_given_racing_reraters_when_run_then_each_difference_applied_once(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(*(_record(acc, n, "45") for n in range(40)))

    reports = await asyncio.gather(*(world.rerate(_catalog(V2), chunk_size=5) for _ in range(4)))

    assert sum(r.changed for r in reports) == 40
    assert sum(r.raced + r.unchanged for r in reports) == 3 * 40
    assert await world.balance(acc) == TOPUP - 40 * 120_000
    calls = [call for call, _ in await world.adjustments(acc)]
    assert len(calls) == len(set(calls)) == 40
    assert await world.ledger.audit() == []


async def test_given_runs_with_different_deck_versions_racing_then_one_change_per_read(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(*(_record(acc, n, "45") for n in range(30)))

    await asyncio.gather(
        world.rerate(_catalog(V2), chunk_size=3), world.rerate(_catalog(V3), chunk_size=3)
    )

    # each call is at the v2 or the v3 price, never v2 + v3 - v1 (two runs, one slot)
    per_call: dict[int, int] = {}
    for call, amount in await world.adjustments(acc):
        per_call[call] = per_call.get(call, 96_000) - amount
    assert set(per_call.values()) <= {120_000, 72_000}
    await world.rerate(_catalog(V3))
    assert await world.balance(acc) == TOPUP - 30 * 72_000
    assert await world.ledger.audit() == []


async def test_given_call_that_cannot_be_priced_when_rerated_then_its_chunk_is_not_written(
    world: World,
) -> None:
    acc = await world.account()
    huge = Rate("99", "Premium", Decimal(100), Decimal(0), 1, 1)
    records = [_record(acc, n, "45") for n in range(3)]
    # a corrupt duration (10^11 s) whose price is beyond any money range
    poison = replace(
        _record(acc, 3, "1", callee="991234", deck=_deck("0.12", p=huge)), billsec_us=10**17
    )
    await world.rated(*records, poison)
    charged = await world.balance(acc)

    with pytest.raises(RepriceFailed, match=f"pbx-1/{acc}-3"):
        await world.rerate(_catalog(_deck("0.15", p=huge)), chunk_size=2)

    # the first chunk (calls 0, 1) is posted and synced; none of the second (calls 2, 3)
    assert [amount for _, amount in await world.adjustments(acc)] == [-24_000, -24_000]
    assert await world.balance(acc) == charged - 2 * 24_000


async def test_given_bad_window_when_rerated_then_refused(world: World) -> None:
    with pytest.raises(InvalidWindow):
        await world.rerate(_catalog(V2), since=DEC, until=NOV)
    with pytest.raises(InvalidWindow):
        await world.rerate(_catalog(V2), since=datetime(2026, 11, 1))


async def test_given_redis_down_when_rerated_then_sql_posted_and_unsynced_counted(
    world: World,
) -> None:
    acc = await world.account()
    await world.rated(_record(acc, 1, "45"))
    dead = aioredis.Redis(port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        with capture_logs() as logs:
            report = await Rerater(world.engine, LiveState(dead, batch=False)).rerate(
                since=NOV, until=DEC, account=acc, deck=None, catalog=_catalog(V2)
            )
    finally:
        await dead.aclose()
    assert (report.changed, report.live_unsynced) == (1, 1)
    [error] = [line for line in logs if line["log_level"] == "error"]
    assert error["account"] == acc and error["txn_key"].startswith("rerate:")
    assert await world.ledger.balance_micros(acc) == TOPUP - 120_000


async def test_given_scheduled_price_change_when_rerated_then_each_call_keeps_its_start_rate(
    world: World,
) -> None:
    # the corrected deck: 0.12/min until 2026-11-15, 0.15/min from then on
    change = datetime(2026, 11, 15, tzinfo=UTC)
    scheduled = RateDeck(
        DeckInfo("retail"),
        [
            replace(V1.match("44") or _missing(), effective_to=change),
            replace(V2.match("44") or _missing(), effective_from=change),
        ],
    )
    acc = await world.account()
    early = _record(acc, 1, "45")  # started 2026-11-01: 0.096 under either deck
    late_us = int(change.timestamp()) * 1_000_000 + 3_600_000_000  # 2026-11-15 01:00
    late = _record(acc, 2, "45", at_us=late_us)  # rated 0.096, the new price is 0.120
    await world.rated(early, late)

    report = await world.rerate(_catalog(scheduled))

    assert (report.examined, report.changed) == (2, 1)
    assert _totals(report) == {acc: (1, 24_000)}  # only the call after the change moved
    assert await world.balance(acc) == TOPUP - 96_000 - 120_000


def _missing() -> Rate:
    raise AssertionError("the test deck has no rate for 44")
