"""The SQL ledger: append-only, double-entry, one idempotency key per entry.

Every transaction is a group of entries sharing a ``txn_key`` and summing to zero:
a top-up credits the account and debits ``sys:funding``; an adjustment moves money
between the account and ``sys:adjustments``; a rated call (``balance.rated_calls``)
debits the account and credits ``sys:revenue``. Entry keys derive from the caller's
idempotency key (``topup:{key}:account`` / ``topup:{key}:funding``, the same with
``adjustment:``), so one key applies once per operation and a retry gets the first
answer back with ``replayed=True``. Amounts are positive credits, negative debits.

Errors (stable codes)::

    LedgerError                  LEDGER_ERROR
    ├── InvalidAmount            INVALID_AMOUNT       not a finite Decimal, or out of range
    │   ├── NonPositiveAmount    AMOUNT_NOT_POSITIVE  a top-up <= 0, an adjustment == 0
    │   └── TooManyDecimals      AMOUNT_TOO_PRECISE   more than 6 decimals (micro-units)
    ├── InvalidIdempotencyKey    INVALID_IDEMPOTENCY_KEY
    └── IdempotencyConflict      IDEMPOTENCY_CONFLICT the key was used with another account/amount
    balance.accounts.UnknownAccount  UNKNOWN_ACCOUNT  no such customer account

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import UnknownAccount
from storage.engine import insert_ignoring_conflicts, wrap_driver_errors
from storage.tables import accounts, ledger_entries, rated_calls, utcnow
from tariffs.money import MICROS_PER_UNIT, MoneyError, to_micros

log = structlog.get_logger(__name__)

_R = TypeVar("_R", bound="PostingResult")

SYS_FUNDING = "sys:funding"
SYS_REVENUE = "sys:revenue"
SYS_ADJUSTMENTS = "sys:adjustments"
MAX_KEY_LENGTH = 200

__all__ = [
    "SYS_ADJUSTMENTS",
    "SYS_FUNDING",
    "SYS_REVENUE",
    "AdjustmentResult",
    "IdempotencyConflict",
    "InvalidAmount",
    "InvalidIdempotencyKey",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "NonPositiveAmount",
    "PostingResult",
    "TooManyDecimals",
    "TopupResult",
    "UnknownAccount",
]


class LedgerError(Exception):
    """Base of ledger errors."""

    code = "LEDGER_ERROR"


class InvalidAmount(LedgerError):
    """The amount is not a finite Decimal within range."""

    code = "INVALID_AMOUNT"


class NonPositiveAmount(InvalidAmount):
    """A top-up must be > 0; an adjustment must not be 0."""

    code = "AMOUNT_NOT_POSITIVE"


class TooManyDecimals(InvalidAmount):
    """The amount has more than 6 decimals (finer than a micro-unit)."""

    code = "AMOUNT_TOO_PRECISE"


class InvalidIdempotencyKey(LedgerError):
    """The idempotency key is empty, too long or not a string."""

    code = "INVALID_IDEMPOTENCY_KEY"


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for another account or amount."""

    code = "IDEMPOTENCY_CONFLICT"


@dataclass(frozen=True, slots=True)
class PostingResult:
    """The customer-side entry of an applied (or replayed) ledger transaction."""

    entry_id: int
    account_id: str
    amount_micros: int
    idempotency_key: str
    created_at: datetime
    replayed: bool


@dataclass(frozen=True, slots=True)
class TopupResult(PostingResult):
    """The answer to a top-up (the first answer again when ``replayed``)."""


@dataclass(frozen=True, slots=True)
class AdjustmentResult(PostingResult):
    """The answer to an adjustment (the first answer again when ``replayed``)."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger entry, as stored."""

    id: int
    idempotency_key: str
    txn_key: str
    account_id: str
    amount_micros: int
    kind: str
    rated_call_id: int | None
    description: str
    created_at: datetime


def amount_to_micros(amount: Decimal, *, allow_negative: bool) -> int:
    """Validate a money amount and convert it to micro-units exactly (no rounding)."""
    if isinstance(amount, bool) or not isinstance(amount, Decimal):
        raise InvalidAmount(f"amount must be a Decimal, got {type(amount).__name__}: {amount!r}")
    if not amount.is_finite():
        raise InvalidAmount(f"amount is not finite: {amount}")
    scaled = amount * MICROS_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise TooManyDecimals(f"amount has more than 6 decimals: {amount}")
    try:
        micros = to_micros(amount)
    except MoneyError as exc:
        raise InvalidAmount(str(exc)) from exc
    if micros == 0 or (micros < 0 and not allow_negative):
        wanted = "not be zero" if allow_negative else "be > 0"
        raise NonPositiveAmount(f"amount must {wanted}, got {amount}")
    return micros


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"idempotency_key must be 1-{MAX_KEY_LENGTH} characters, got {key!r}"
        )


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        idempotency_key=row.idempotency_key,
        txn_key=row.txn_key,
        account_id=row.account_id,
        amount_micros=row.amount_micros,
        kind=row.kind,
        rated_call_id=row.rated_call_id,
        description=row.description,
        created_at=row.created_at,
    )


class Ledger:
    """Top-ups, adjustments, balances and the ledger's self-audit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def topup(
        self, account_id: str, amount: Decimal, idempotency_key: str, description: str = ""
    ) -> TopupResult:
        """Credit ``amount`` (> 0) to the account, once per idempotency key."""
        micros = amount_to_micros(amount, allow_negative=False)
        return await self._post(
            TopupResult, "topup", account_id, micros, SYS_FUNDING, idempotency_key, description
        )

    async def adjust(
        self, account_id: str, amount: Decimal, idempotency_key: str, description: str = ""
    ) -> AdjustmentResult:
        """Credit (> 0) or debit (< 0) the account by hand, once per idempotency key."""
        micros = amount_to_micros(amount, allow_negative=True)
        return await self._post(
            AdjustmentResult,
            "adjustment",
            account_id,
            micros,
            SYS_ADJUSTMENTS,
            idempotency_key,
            description,
        )

    async def _post(
        self,
        result_type: type[_R],
        kind: str,
        account_id: str,
        micros: int,
        counter_account: str,
        key: str,
        description: str,
    ) -> _R:
        _check_key(key)
        txn_key = f"{kind}:{key}"
        account_key = f"{txn_key}:account"
        now = utcnow()
        common = {"txn_key": txn_key, "kind": kind, "description": description, "created_at": now}
        rows = [
            {**common, "idempotency_key": account_key, "account_id": account_id,
             "amount_micros": micros},
            {**common, "idempotency_key": f"{txn_key}:{counter_account.removeprefix('sys:')}",
             "account_id": counter_account, "amount_micros": -micros},
        ]  # fmt: skip
        table = ledger_entries
        with wrap_driver_errors(f"ledger {kind}"):
            async with self._engine.begin() as conn:
                known = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
                if known.first() is None:
                    raise UnknownAccount(account_id)
                stmt = insert_ignoring_conflicts(
                    conn.dialect.name, table, ["idempotency_key"]
                ).returning(table.c.id, table.c.idempotency_key)
                inserted = {r.idempotency_key: r.id for r in await conn.execute(stmt.values(rows))}
                if account_key in inserted:
                    log.info(kind, account_id=account_id, amount_micros=micros, txn_key=txn_key)
                    return result_type(
                        inserted[account_key], account_id, micros, key, now, replayed=False
                    )
                first = (
                    await conn.execute(select(table).where(table.c.idempotency_key == account_key))
                ).one()
        if first.account_id != account_id or first.amount_micros != micros:
            raise IdempotencyConflict(
                f"idempotency_key {key!r} was used for {first.account_id!r} "
                f"amount_micros={first.amount_micros}, not {account_id!r} amount_micros={micros}"
            )
        return result_type(first.id, account_id, micros, key, first.created_at, replayed=True)

    async def balance_micros(self, account_id: str) -> int:
        """The account's balance: the sum of its entries (0 when it has none)."""
        query = select(func.coalesce(func.sum(ledger_entries.c.amount_micros), 0)).where(
            ledger_entries.c.account_id == account_id
        )
        with wrap_driver_errors("reading a balance"):
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def balances(self) -> dict[str, int]:
        """Every customer account's balance (0 for accounts without entries)."""
        sums = (
            select(
                ledger_entries.c.account_id,
                func.sum(ledger_entries.c.amount_micros).label("total"),
            )
            .group_by(ledger_entries.c.account_id)
            .subquery()
        )
        query = select(accounts.c.id, func.coalesce(sums.c.total, 0)).select_from(
            accounts.outerjoin(sums, sums.c.account_id == accounts.c.id)
        )
        with wrap_driver_errors("reading balances"):
            async with self._engine.connect() as conn:
                return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def entries(
        self, account_id: str, limit: int = 100, offset: int = 0
    ) -> list[LedgerEntry]:
        """The account's entries, newest first."""
        query = (
            select(ledger_entries)
            .where(ledger_entries.c.account_id == account_id)
            .order_by(ledger_entries.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with wrap_driver_errors("reading ledger entries"):
            async with self._engine.connect() as conn:
                return [_entry(row) for row in await conn.execute(query)]

    async def audit(self) -> list[str]:
        """Problems found in the ledger; an empty list means healthy."""
        le, rc = ledger_entries, rated_calls
        unbalanced = (
            select(le.c.txn_key, func.sum(le.c.amount_micros).label("total"))
            .group_by(le.c.txn_key)
            .having(func.sum(le.c.amount_micros) != 0)
            .order_by(le.c.txn_key)
        )
        charged = (
            select(
                le.c.rated_call_id,
                le.c.account_id,
                (-func.sum(le.c.amount_micros)).label("charged"),
            )
            .where(le.c.kind == "charge", le.c.rated_call_id.is_not(None))
            .group_by(le.c.rated_call_id, le.c.account_id)
            .subquery()
        )
        charged_total = func.coalesce(charged.c.charged, 0)
        mismatched = (
            select(rc.c.switch_id, rc.c.call_id, rc.c.cost_micros, charged_total.label("charged"))
            .select_from(
                rc.outerjoin(
                    charged,
                    and_(
                        charged.c.rated_call_id == rc.c.id, charged.c.account_id == rc.c.account_id
                    ),
                )
            )
            .where(rc.c.cost_micros != charged_total)
            .order_by(rc.c.id)
        )
        # charge entries must belong to a rated call (rated_call_id has no foreign key:
        # migration 0002 dropped it from the hot write path, so the audit checks it)
        orphans = (
            select(le.c.idempotency_key, le.c.rated_call_id)
            .select_from(le.outerjoin(rc, rc.c.id == le.c.rated_call_id))
            .where(le.c.kind == "charge", rc.c.id.is_(None))
            .order_by(le.c.id)
        )
        problems: list[str] = []
        with wrap_driver_errors("auditing the ledger"):
            async with self._engine.connect() as conn:
                for row in await conn.execute(unbalanced):
                    problems.append(f"transaction {row.txn_key!r} sums to {row.total}, not 0")
                for entry in await conn.execute(orphans):
                    problems.append(
                        f"charge entry {entry.idempotency_key!r} points at no rated call "
                        f"(rated_call_id {entry.rated_call_id})"
                    )
                for call in await conn.execute(mismatched):
                    problems.append(
                        f"rated call {call.switch_id}/{call.call_id} costs {call.cost_micros} "
                        f"micros but its charge entries debit {call.charged}"
                    )
        if problems:
            log.warning("ledger audit found problems", count=len(problems))
        return problems
