"""Customer and reseller accounts in SQL (``accounts`` table).

An account is identified by the switch's accountcode. A reseller is just the parent
account; ``sys:*`` ids are reserved for the ledger's system accounts.

Errors (stable codes)::

    AccountError            ACCOUNT_ERROR
    ├── AccountExists       ACCOUNT_EXISTS     create() with an id already taken
    ├── UnknownAccount      UNKNOWN_ACCOUNT    no such account (or parent)
    └── InvalidAccount      INVALID_ACCOUNT    a field's value is invalid (names the field)

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.engine import wrap_driver_errors
from storage.tables import accounts, utcnow

log = structlog.get_logger(__name__)

BILLING_MODES = ("prepaid", "postpaid")
STATUSES = ("active", "suspended", "closed")
SYSTEM_PREFIX = "sys:"
_ID_RE = re.compile(r"^[^\s]{1,64}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_MAX_PARENT_DEPTH = 32


class AccountError(Exception):
    """Base of account errors."""

    code = "ACCOUNT_ERROR"


class AccountExists(AccountError):
    """An account with this id already exists."""

    code = "ACCOUNT_EXISTS"


class UnknownAccount(AccountError):
    """No account has this id."""

    code = "UNKNOWN_ACCOUNT"

    def __init__(self, account_id: str, role: str = "account") -> None:
        super().__init__(f"unknown {role}: {account_id!r}")
        self.account_id = account_id


class InvalidAccount(AccountError):
    """A field of an account has an invalid value."""

    code = "INVALID_ACCOUNT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Account:
    """One account: a customer, or a reseller (the parent of other accounts)."""

    id: str
    name: str = ""
    parent_id: str | None = None
    currency: str = "USD"
    billing: str = "prepaid"
    credit_limit_micros: int = 0
    status: str = "active"
    concurrency_limit: int | None = None  # None = unlimited
    rate_deck: str | None = None
    timezone: str = "UTC"
    # real-time caps (issue 5); None = no cap
    cps_limit: int | None = None  # calls admitted per second
    seat_limit: int | None = None  # live agent seats
    concurrency_package: int | None = None  # calls included; concurrency_limit = burst
    overage_rate_micros: int | None = None  # per channel-minute above the package
    customers_concurrency_limit: int | None = None  # a reseller: all its customers' calls
    customers_cps_limit: int | None = None  # a reseller: all its customers' calls per second
    trial_ends_at: datetime | None = None  # in trial until then (UTC); None: not in trial
    status_reason: str = ""  # why suspended: 'operator', 'credit_limit', ...
    low_balance: str = ""  # JSON thresholds, '' = the configured defaults
    created_at: datetime | None = None  # set by the store
    updated_at: datetime | None = None  # set by the store


_FIELDS = tuple(f.name for f in fields(Account))
_MUTABLE = frozenset(_FIELDS) - {"id", "created_at", "updated_at"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(account: Account) -> None:
    """Raise ``InvalidAccount`` naming the first invalid field of ``account``."""
    if not isinstance(account.id, str) or not _ID_RE.match(account.id):
        raise InvalidAccount("id", f"1-64 characters without spaces, got {account.id!r}")
    if account.id.startswith(SYSTEM_PREFIX):
        raise InvalidAccount("id", f"the prefix {SYSTEM_PREFIX!r} is reserved: {account.id!r}")
    if not isinstance(account.name, str):
        raise InvalidAccount("name", f"must be a string, got {account.name!r}")
    if account.parent_id is not None and account.parent_id == account.id:
        raise InvalidAccount("parent_id", "an account cannot be its own parent")
    if not isinstance(account.currency, str) or not _CURRENCY_RE.match(account.currency):
        raise InvalidAccount("currency", f"3 upper-case letters, got {account.currency!r}")
    if account.billing not in BILLING_MODES:
        raise InvalidAccount("billing", f"one of {BILLING_MODES}, got {account.billing!r}")
    if not _is_int(account.credit_limit_micros) or account.credit_limit_micros < 0:
        raise InvalidAccount(
            "credit_limit_micros", f"an int >= 0, got {account.credit_limit_micros!r}"
        )
    if account.status not in STATUSES:
        raise InvalidAccount("status", f"one of {STATUSES}, got {account.status!r}")
    limit = account.concurrency_limit
    if limit is not None and (not _is_int(limit) or limit < 0):
        raise InvalidAccount("concurrency_limit", f"None or an int >= 0, got {limit!r}")
    for name in (
        "cps_limit",
        "seat_limit",
        "concurrency_package",
        "overage_rate_micros",
        "customers_concurrency_limit",
        "customers_cps_limit",
    ):
        value = getattr(account, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise InvalidAccount(name, f"None or an int >= 0, got {value!r}")
    package = account.concurrency_package
    if package is not None and limit is not None and package > limit:
        raise InvalidAccount(
            "concurrency_package",
            f"the package ({package}) exceeds the burst limit concurrency_limit ({limit})",
        )
    trial = account.trial_ends_at
    if trial is not None and (not isinstance(trial, datetime) or trial.tzinfo is None):
        raise InvalidAccount("trial_ends_at", f"None or an aware datetime, got {trial!r}")
    if not isinstance(account.status_reason, str) or len(account.status_reason) > 64:
        raise InvalidAccount(
            "status_reason", f"a string of at most 64, got {account.status_reason!r}"
        )
    if not isinstance(account.low_balance, str):
        raise InvalidAccount("low_balance", f"a JSON string, got {account.low_balance!r}")
    deck = account.rate_deck
    if deck is not None and (not isinstance(deck, str) or not 0 < len(deck) <= 64):
        raise InvalidAccount("rate_deck", f"None or 1-64 characters, got {deck!r}")
    try:
        ZoneInfo(account.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidAccount("timezone", f"unknown time zone {account.timezone!r}") from exc


def _from_row(row: Row[Any]) -> Account:
    return Account(**{name: getattr(row, name) for name in _FIELDS})


class AccountStore:
    """Create, read and change accounts (each call is its own transaction)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, account: Account) -> Account:
        """Insert a new account; its parent (the reseller) must already exist."""
        validate(account)
        now = utcnow()
        created = replace(account, created_at=now, updated_at=now)
        with wrap_driver_errors("creating an account"):
            try:
                async with self._engine.begin() as conn:
                    if await self._fetch(conn, account.id) is not None:
                        raise AccountExists(f"account exists: {account.id!r}")
                    if account.parent_id is not None:
                        await self._check_parent(conn, account.id, account.parent_id)
                    values = {name: getattr(created, name) for name in _FIELDS}
                    await conn.execute(insert(accounts).values(**values))
            except IntegrityError as exc:  # lost a race on the same id
                raise AccountExists(f"account exists: {account.id!r}") from exc
        log.info("account created", account_id=account.id, parent_id=account.parent_id)
        return created

    async def get(self, account_id: str) -> Account | None:
        """The account with this id, or None."""
        with wrap_driver_errors("reading an account"):
            async with self._engine.connect() as conn:
                return await self._fetch(conn, account_id)

    async def list(self, parent_id: str | None = None) -> builtins.list[Account]:
        """Every account ordered by id, or only the direct children of ``parent_id``."""
        query = select(accounts).order_by(accounts.c.id)
        if parent_id is not None:
            query = query.where(accounts.c.parent_id == parent_id)
        with wrap_driver_errors("listing accounts"):
            async with self._engine.connect() as conn:
                return [_from_row(row) for row in await conn.execute(query)]

    async def changed_since(self, since: datetime) -> builtins.list[Account]:
        """Accounts created or changed at or after ``since`` (by ``updated_at``)."""
        query = select(accounts).where(accounts.c.updated_at >= since).order_by(accounts.c.id)
        with wrap_driver_errors("listing changed accounts"):
            async with self._engine.connect() as conn:
                return [_from_row(row) for row in await conn.execute(query)]

    async def set_status(self, account_id: str, status: str) -> Account:
        """Change an account's status ('active', 'suspended', 'closed')."""
        return await self.update(account_id, status=status)

    async def update(self, account_id: str, **changes: Any) -> Account:
        """Change some fields of an account; returns the updated account."""
        unknown = sorted(set(changes) - _MUTABLE)
        if unknown:
            raise InvalidAccount(unknown[0], "not a field that can be changed")
        with wrap_driver_errors("updating an account"):
            async with self._engine.begin() as conn:
                current = await self._fetch(conn, account_id)
                if current is None:
                    raise UnknownAccount(account_id)
                updated = replace(current, **changes, updated_at=utcnow())
                validate(updated)
                new_parent = changes.get("parent_id")
                if new_parent is not None and new_parent != current.parent_id:
                    await self._check_parent(conn, account_id, new_parent)
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id)
                    .values(**changes, updated_at=updated.updated_at)
                )
        log.info("account updated", account_id=account_id, fields=sorted(changes))
        return updated

    @staticmethod
    async def _fetch(conn: AsyncConnection, account_id: str) -> Account | None:
        row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return None if row is None else _from_row(row)

    @staticmethod
    async def _check_parent(conn: AsyncConnection, account_id: str, parent_id: str) -> None:
        """The parent exists and ``account_id`` is not among its ancestors (no cycles)."""
        cursor: str | None = parent_id
        for _ in range(_MAX_PARENT_DEPTH):
            if cursor is None:
                return
            if cursor == account_id:
                raise InvalidAccount("parent_id", f"{parent_id!r} would create a cycle")
            row = (
                await conn.execute(select(accounts.c.parent_id).where(accounts.c.id == cursor))
            ).first()
            if row is None:
                raise UnknownAccount(cursor, role="parent account")
            cursor = row.parent_id
        raise InvalidAccount("parent_id", f"reseller chain deeper than {_MAX_PARENT_DEPTH}")
