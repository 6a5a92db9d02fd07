"""Ledger: idempotent top-ups and adjustments, balances, audit (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore, UnknownAccount
from balance.ledger import (
    SYS_ADJUSTMENTS,
    SYS_FUNDING,
    IdempotencyConflict,
    InvalidAmount,
    InvalidIdempotencyKey,
    Ledger,
    NonPositiveAmount,
    TooManyDecimals,
)
from storage.tables import ledger_entries, utcnow


async def _account(engine: AsyncEngine) -> str:
    account = await AccountStore(engine).create(Account(id=f"acc-{uuid.uuid4().hex[:10]}"))
    return account.id


def _key() -> str:
    return f"req-{uuid.uuid4()}"


async def test_given_account_when_topped_up_then_double_entry_balances(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    funding_before = await ledger.balance_micros(SYS_FUNDING)
    result = await ledger.topup(acc, Decimal("12.345678"), _key(), "card")
    assert (result.amount_micros, result.replayed) == (12_345_678, False)
    assert await ledger.balance_micros(acc) == 12_345_678
    assert await ledger.balance_micros(SYS_FUNDING) == funding_before - 12_345_678
    [entry] = await ledger.entries(acc)
    assert (entry.id, entry.kind, entry.description) == (result.entry_id, "topup", "card")
    assert await ledger.audit() == []


async def test_given_applied_key_when_retried_then_first_answer_is_replayed(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc, key = Ledger(sql_engine), await _account(sql_engine), _key()
    first = await ledger.topup(acc, Decimal("5"), key)
    again = await ledger.topup(acc, Decimal("5.000000"), key)
    assert again.replayed and not first.replayed
    assert (again.entry_id, again.created_at) == (first.entry_id, first.created_at)
    assert await ledger.balance_micros(acc) == 5_000_000


async def test_given_applied_key_when_reused_for_other_amount_or_account_then_conflict(
    sql_engine: AsyncEngine,
) -> None:
    ledger, key = Ledger(sql_engine), _key()
    acc, other = await _account(sql_engine), await _account(sql_engine)
    await ledger.topup(acc, Decimal("5"), key)
    with pytest.raises(IdempotencyConflict, match=key):
        await ledger.topup(acc, Decimal("6"), key)
    with pytest.raises(IdempotencyConflict, match=other):
        await ledger.topup(other, Decimal("5"), key)
    assert (await ledger.balance_micros(acc), await ledger.balance_micros(other)) == (5_000_000, 0)


async def test_given_one_key_when_topups_race_then_exactly_one_applies(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc, key = Ledger(sql_engine), await _account(sql_engine), _key()
    results = await asyncio.gather(*(ledger.topup(acc, Decimal("7.5"), key) for _ in range(6)))
    assert sum(not r.replayed for r in results) == 1
    assert len({r.entry_id for r in results}) == 1
    assert await ledger.balance_micros(acc) == 7_500_000
    assert len(await ledger.entries(acc)) == 1


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        (Decimal("0"), NonPositiveAmount),
        (Decimal("-1"), NonPositiveAmount),
        (Decimal("0.0000001"), TooManyDecimals),
        (Decimal("NaN"), InvalidAmount),
        (Decimal("1e20"), InvalidAmount),
        (1.5, InvalidAmount),
    ],
)
async def test_given_bad_amount_when_topped_up_then_named_error_and_no_entry(
    sql_engine: AsyncEngine, amount: Decimal, error: type[Exception]
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    with pytest.raises(error, match="amount"):
        await ledger.topup(acc, amount, _key())
    assert await ledger.entries(acc) == []


async def test_given_bad_key_or_unknown_account_when_topped_up_then_refused(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    with pytest.raises(InvalidIdempotencyKey):
        await ledger.topup(acc, Decimal("1"), "  ")
    with pytest.raises(UnknownAccount, match="ghost"):
        await ledger.topup("ghost", Decimal("1"), _key())
    assert await ledger.balance_micros("ghost") == 0


async def test_given_signed_adjustments_when_applied_then_balance_and_counter_move(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    before = await ledger.balance_micros(SYS_ADJUSTMENTS)
    await ledger.adjust(acc, Decimal("3"), _key(), "goodwill")
    result = await ledger.adjust(acc, Decimal("-1.25"), _key(), "correction")
    assert (result.amount_micros, result.replayed) == (-1_250_000, False)
    assert await ledger.balance_micros(acc) == 1_750_000
    assert await ledger.balance_micros(SYS_ADJUSTMENTS) == before - 1_750_000
    assert [e.kind for e in await ledger.entries(acc)] == ["adjustment", "adjustment"]
    with pytest.raises(NonPositiveAmount, match="zero"):
        await ledger.adjust(acc, Decimal("0"), _key())


async def test_given_accounts_without_entries_when_balances_read_then_zero_included(
    sql_engine: AsyncEngine,
) -> None:
    ledger = Ledger(sql_engine)
    rich, idle = await _account(sql_engine), await _account(sql_engine)
    await ledger.topup(rich, Decimal("2"), _key())
    balances = await ledger.balances()
    assert (balances[rich], balances[idle]) == (2_000_000, 0)
    assert not any(name.startswith("sys:") for name in balances)


async def test_given_many_entries_when_paged_then_newest_first_without_overlap(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    for amount in range(1, 6):
        await ledger.topup(acc, Decimal(amount), _key())
    first = await ledger.entries(acc, limit=3)
    rest = await ledger.entries(acc, limit=3, offset=3)
    assert [e.amount_micros // 1_000_000 for e in first + rest] == [5, 4, 3, 2, 1]


async def test_given_unbalanced_transaction_when_audited_then_it_is_reported(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    await ledger.topup(acc, Decimal("1"), _key())
    async with sql_engine.begin() as conn:
        await conn.execute(
            insert(ledger_entries).values(
                idempotency_key="broken:1",
                txn_key="broken",
                account_id=acc,
                amount_micros=42,
                kind="adjustment",
                description="",
                created_at=utcnow(),
            )
        )
    problems = await ledger.audit()
    assert len(problems) == 1 and "'broken'" in problems[0] and "42" in problems[0]


async def test_given_charge_entries_of_no_rated_call_when_audited_then_they_are_reported(
    sql_engine: AsyncEngine,
) -> None:
    ledger, acc = Ledger(sql_engine), await _account(sql_engine)
    async with sql_engine.begin() as conn:
        for key, account, amount in (("ghost:a", acc, -5), ("ghost:r", "sys:revenue", 5)):
            await conn.execute(
                insert(ledger_entries).values(
                    idempotency_key=key,
                    txn_key="ghost",
                    account_id=account,
                    amount_micros=amount,
                    kind="charge",
                    rated_call_id=987_654_321,
                    description="",
                    created_at=utcnow(),
                )
            )
    problems = await ledger.audit()
    assert len(problems) == 2  # the transaction balances, but both entries are orphans
    assert all("points at no rated call" in p and "987654321" in p for p in problems)
