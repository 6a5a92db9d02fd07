"""Rated calls written exactly once with their charges; I4 conservation (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.ledger import SYS_REVENUE, Ledger
from balance.rated_calls import InvalidRatedCall, RatedCallRecord, RatedCallWriter
from storage.engine import StorageError
from storage.tables import ledger_entries, rated_calls, utcnow


def _call(account: str, n: int, cost: int = 1_500, switch: str = "pbx-1") -> RatedCallRecord:
    start = 1_700_000_000_000_000 + n * 1_000_000
    return RatedCallRecord(
        switch_id=switch,
        call_id=f"call-{n}",
        account_id=account,
        caller="1001",
        callee="442071234567",
        started_at_us=start,
        answered_at_us=start + 2_000_000 if cost else None,
        ended_at_us=start + 62_000_000,
        billsec_us=60_000_000 if cost else 0,
        billable_seconds=60 if cost else 0,
        cost_micros=cost,
        currency="USD",
        deck="retail",
        prefix="44",
        destination="United Kingdom",
        rate_micros=1_500,
        disposition="ANSWERED" if cost else "NO ANSWER",
        cause="16",
    )


async def _account(engine: AsyncEngine) -> str:
    return (await AccountStore(engine).create(Account(id=f"acc-{uuid.uuid4().hex[:10]}"))).id


async def test_given_batch_when_written_then_calls_and_charges_exist_once(
    sql_engine: AsyncEngine,
) -> None:
    writer, ledger, acc = (
        RatedCallWriter(sql_engine),
        Ledger(sql_engine),
        await _account(sql_engine),
    )
    batch = [_call(acc, n, cost=1_000 * n) for n in range(5)]  # call-0 costs nothing
    assert await writer.write(batch) == [True] * 5
    assert await writer.get("pbx-1", "call-3") == batch[3]
    assert await writer.count(acc) == 5
    assert await ledger.balance_micros(acc) == -10_000
    assert await ledger.balance_micros(SYS_REVENUE) == 10_000
    entries = await ledger.entries(acc)
    assert len(entries) == 4 and {e.kind for e in entries} == {"charge"}
    assert {e.idempotency_key for e in entries} == {
        f"call:pbx-1:call-{n}:charge" for n in (1, 2, 3, 4)
    }
    assert await ledger.audit() == []


async def test_given_written_batch_when_written_again_then_nothing_new(
    sql_engine: AsyncEngine,
) -> None:
    writer, ledger, acc = (
        RatedCallWriter(sql_engine),
        Ledger(sql_engine),
        await _account(sql_engine),
    )
    batch = [_call(acc, n) for n in range(10)]
    await writer.write(batch)
    assert await writer.write(batch) == [False] * 10
    assert await writer.write([*batch[:2], _call(acc, 99)]) == [False, False, True]
    assert await writer.count(acc) == 11
    assert await ledger.balance_micros(acc) == -11 * 1_500


async def test_given_duplicates_inside_batch_when_written_then_counted_once(
    sql_engine: AsyncEngine,
) -> None:
    writer, ledger, acc = (
        RatedCallWriter(sql_engine),
        Ledger(sql_engine),
        await _account(sql_engine),
    )
    call = _call(acc, 1)
    assert await writer.write([call, _call(acc, 2), call]) == [True, True, False]
    assert await ledger.balance_micros(acc) == -3_000
    assert await writer.write([]) == []


async def test_given_racing_writers_with_overlapping_batches_then_each_call_once(
    sql_engine: AsyncEngine,
) -> None:
    writer, ledger, acc = (
        RatedCallWriter(sql_engine),
        Ledger(sql_engine),
        await _account(sql_engine),
    )
    calls = [_call(acc, n) for n in range(200)]
    rng = random.Random(7)
    batches = []
    for _ in range(6):
        batch = rng.sample(calls, 120)
        batches.append(batch)
    results = await asyncio.gather(*(RatedCallWriter(sql_engine).write(b) for b in batches))
    written: defaultdict[str, int] = defaultdict(int)
    for batch, flags in zip(batches, results, strict=True):
        for call, flag in zip(batch, flags, strict=True):
            written[call.call_id] += flag
    covered = {c.call_id for b in batches for c in b}
    assert all(written[call_id] == 1 for call_id in covered)
    assert await writer.count(acc) == len(covered)
    assert await ledger.balance_micros(acc) == -1_500 * len(covered)
    assert await ledger.audit() == []


async def test_given_calls_when_listed_then_newest_first_and_filtered_by_account(
    sql_engine: AsyncEngine,
) -> None:
    writer = RatedCallWriter(sql_engine)
    acc, other = await _account(sql_engine), await _account(sql_engine)
    await writer.write([_call(acc, n) for n in range(4)] + [_call(other, 10, switch="fs-1")])
    page = await writer.list(acc, limit=2)
    assert [c.call_id for c in page] == ["call-3", "call-2"]
    assert [c.call_id for c in await writer.list(acc, limit=2, offset=2)] == ["call-1", "call-0"]
    assert [c.account_id for c in await writer.list(other)] == [other]
    assert await writer.get("fs-1", "call-0") is None


async def test_given_invalid_record_when_written_then_error_names_record_and_field(
    sql_engine: AsyncEngine,
) -> None:
    writer, acc = RatedCallWriter(sql_engine), await _account(sql_engine)
    bad = _call(acc, 2)
    object.__setattr__(bad, "cost_micros", Decimal("1.5"))
    with pytest.raises(InvalidRatedCall, match=r"record 1 .*cost_micros"):
        await writer.write([_call(acc, 1), bad])
    assert await writer.count(acc) == 0


async def test_given_cost_tampered_when_audited_then_mismatch_reported(
    sql_engine: AsyncEngine,
) -> None:
    writer, ledger, acc = (
        RatedCallWriter(sql_engine),
        Ledger(sql_engine),
        await _account(sql_engine),
    )
    await writer.write([_call(acc, 1, switch="pbx-audit")])
    async with sql_engine.begin() as conn:
        await conn.execute(
            update(rated_calls).where(rated_calls.c.switch_id == "pbx-audit").values(cost_micros=9)
        )
    [problem] = await ledger.audit()
    assert "pbx-audit/call-1" in problem and "1500" in problem


async def test_given_random_activity_when_quiet_then_i4_conservation_holds(
    sql_engine: AsyncEngine,
) -> None:
    ledger, writer = Ledger(sql_engine), RatedCallWriter(sql_engine)
    accounts = [await _account(sql_engine) for _ in range(4)]
    rng = random.Random(20240601)
    expected = dict.fromkeys(accounts, 0)
    call_no = 0
    for step in range(60):
        acc = rng.choice(accounts)
        action = rng.random()
        if action < 0.3:
            micros = rng.randint(1, 50_000_000)
            key = f"t-{step}"
            await ledger.topup(acc, Decimal(micros) / 1_000_000, key)
            await ledger.topup(acc, Decimal(micros) / 1_000_000, key)  # a retry: no effect
            expected[acc] += micros
        elif action < 0.45:
            micros = rng.randint(-5_000_000, 5_000_000) or 1
            await ledger.adjust(acc, Decimal(micros) / 1_000_000, f"a-{step}")
            expected[acc] += micros
        else:
            batch = []
            for _ in range(rng.randint(1, 25)):
                call_no += 1
                call = _call(
                    rng.choice(accounts), call_no, cost=rng.choice([0, rng.randint(1, 10**7)])
                )
                batch.append(call)
            await writer.write(batch + rng.sample(batch, len(batch) // 3))  # with duplicates
            for call in batch:
                expected[call.account_id] -= call.cost_micros
    balances = await ledger.balances()
    assert {acc: balances[acc] for acc in accounts} == expected
    for acc in accounts:
        assert await ledger.balance_micros(acc) == expected[acc]
    assert await ledger.audit() == []


async def test_given_mixed_batches_when_written_then_every_charge_references_its_own_call(
    sql_engine: AsyncEngine,
) -> None:
    # rated_call_id has no foreign key: the writer alone guarantees what it points to
    writer, acc, other = (
        RatedCallWriter(sql_engine),
        await _account(sql_engine),
        await _account(sql_engine),
    )
    await Ledger(sql_engine).topup(acc, Decimal(5), "before-the-calls")
    first = [_call(acc, n, cost=100 * n) for n in range(6)]
    await writer.write(first)
    second = [*first[3:], _call(other, 50, switch="fs-2"), _call(acc, 51), first[4]]
    assert await writer.write(second) == [False, False, False, True, True, False]

    le, rc = ledger_entries, rated_calls
    query = (
        select(
            le.c.idempotency_key,
            le.c.txn_key,
            le.c.account_id,
            le.c.amount_micros,
            rc.c.switch_id,
            rc.c.call_id,
            rc.c.account_id.label("call_account"),
            rc.c.cost_micros,
        )
        .select_from(le.outerjoin(rc, rc.c.id == le.c.rated_call_id))
        .where(le.c.kind == "charge")
    )
    async with sql_engine.connect() as conn:
        rows = (await conn.execute(query)).all()

    assert len(rows) == 2 * 7  # calls 1..5, fs-2/call-50, call-51 (call-0 costs nothing)
    for row in rows:
        assert row.txn_key == f"call:{row.switch_id}:{row.call_id}", row
        if row.idempotency_key.endswith(":charge"):
            assert (row.account_id, row.amount_micros) == (row.call_account, -row.cost_micros)
        else:
            assert (row.account_id, row.amount_micros) == (SYS_REVENUE, row.cost_micros)


@pytest.mark.parametrize("size", [6, 150], ids=["small-batch", "large-batch"])
async def test_given_charge_that_cannot_be_written_when_batch_written_then_nothing_is(
    sql_engine: AsyncEngine, size: int
) -> None:
    writer, acc = RatedCallWriter(sql_engine), await _account(sql_engine)
    async with sql_engine.begin() as conn:  # squats the key of call-3's revenue entry
        await conn.execute(
            insert(ledger_entries).values(
                idempotency_key="call:pbx-atomic:call-3:revenue",
                txn_key="squatter",
                account_id=acc,
                amount_micros=0,
                kind="adjustment",
                description="",
                created_at=utcnow(),
            )
        )

    with pytest.raises(StorageError, match="writing rated calls"):
        await writer.write([_call(acc, n, switch="pbx-atomic") for n in range(size)])

    assert await writer.count(acc) == 0  # one transaction: no call without its charges
    fresh = await writer.write([_call(acc, n, switch="pbx-ok") for n in range(size)])
    assert fresh == [True] * size


async def test_given_large_batch_with_known_and_repeated_calls_then_new_ones_written_once(
    sql_engine: AsyncEngine,
) -> None:
    writer, ledger, acc = (
        RatedCallWriter(sql_engine),
        Ledger(sql_engine),
        await _account(sql_engine),
    )
    known = [_call(acc, n) for n in range(0, 300, 3)]
    await writer.write(known)
    batch = [_call(acc, n) for n in range(300)] + known[:10]

    flags = await writer.write(batch)

    assert flags == [n % 3 != 0 for n in range(300)] + [False] * 10
    assert await writer.count(acc) == 300
    assert await ledger.balance_micros(acc) == -1_500 * 300
    assert await ledger.audit() == []
