"""Settlement batches written concurrently: each call still rated and settled exactly once.

Real SQL (SQLite and PostgreSQL) and real Redis. The writer is slowed down so that the
batches really overlap; a call submitted twice lands in two batches in flight at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from balance import keys
from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from balance.live import AccountLimits, LiveState
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from daemon.settlement import Settlement, Settler
from tests.support import services

RUN = f"conc-{uuid.uuid4().hex[:8]}"  # every account of this module starts with it
COST = 1_500
SLICE = 10_000
CALLS = 60
INITIAL = 1_000_000


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's Redis keys afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


class _SlowWriter(RatedCallWriter):
    """The real writer, holding each batch a moment first; counts batches in flight."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.in_flight = 0
        self.most_in_flight = 0

    async def write(self, records: Sequence[RatedCallRecord]) -> list[bool]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.03)
            return await super().write(records)
        finally:
            self.in_flight -= 1


def _record(account: str, n: int) -> RatedCallRecord:
    start = 1_700_000_000_000_000 + n * 1_000_000
    return RatedCallRecord(
        "pbx-conc", f"call-{account}-{n}", account, "1001", "442071234567",
        start, start + 1_000_000, start + 61_000_000, 60_000_000, 60,
        COST, "USD", "retail", "44", "United Kingdom", COST, "ANSWERED", "16",
    )  # fmt: skip


async def _funded_account(engine: AsyncEngine, live: LiveState) -> str:
    account = f"{RUN}-{uuid.uuid4().hex[:10]}"
    await AccountStore(engine).create(Account(id=account))
    await Ledger(engine).topup(account, Decimal(INITIAL) / 1_000_000, f"fund-{account}")
    await live.load_account(AccountLimits(account, "active", INITIAL, 0, None))
    return account


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_given_overlapping_batches_when_settled_then_each_call_once_in_sql_and_redis(
    sql_engine: AsyncEngine, redis_client: aioredis.Redis, concurrency: int
) -> None:
    live = LiveState(redis_client)
    account = await _funded_account(sql_engine, live)
    writer = _SlowWriter(sql_engine)
    settler = Settler(writer, live, batch_size=7, batch_delay=0.001, concurrency=concurrency)
    settler.start()
    try:
        items = []
        for n in range(CALLS):
            key = f"{account}-{n}"
            assert (await live.reserve(account, key, SLICE)).ok
            items.append(Settlement(_record(account, n), key))
        # every third call arrives twice, the copy a few calls later (another batch)
        order = [*items]
        for n in range(0, CALLS, 3):
            order.insert(min(len(order), order.index(items[n]) + 9), items[n])
        for item in order:
            settler.submit(item)
        await settler.wait_idle()

        # wait_idle returned only when every submission was written and settled
        assert settler.written + settler.duplicates == len(order)
        assert (settler.written, settler.duplicates) == (CALLS, CALLS // 3)
        assert writer.most_in_flight == concurrency
        assert await RatedCallWriter(sql_engine).count(account) == CALLS
        ledger = Ledger(sql_engine)
        assert await ledger.balance_micros(account) == INITIAL - CALLS * COST
        assert await ledger.audit() == []
        snapshot = await live.snapshot(account)
        assert snapshot is not None
        assert snapshot.balance_micros == INITIAL - CALLS * COST
        assert (snapshot.reserved_micros, snapshot.calls) == (0, {})
    finally:
        await settler.close()
        await live.aclose()


async def test_given_batches_in_flight_when_closed_then_every_settlement_is_written(
    sql_engine: AsyncEngine, redis_client: aioredis.Redis
) -> None:
    live = LiveState(redis_client)
    account = await _funded_account(sql_engine, live)
    settler = Settler(_SlowWriter(sql_engine), live, batch_size=5, batch_delay=0.001, concurrency=2)
    settler.start()
    for n in range(23):
        settler.submit(Settlement(_record(account, n), f"{account}-{n}"))
    await asyncio.sleep(0.01)  # the first batches are in flight

    await settler.close()

    assert settler.written == 23
    assert await RatedCallWriter(sql_engine).count(account) == 23
    await live.aclose()


def test_given_no_batch_in_flight_allowed_when_settler_made_then_error_names_it() -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1, got 0"):
        Settler(None, None, concurrency=0)  # type: ignore[arg-type]
