"""Carriers and margin guards in SQL (``carriers``, ``margin_guards``).

A carrier row is a :class:`tariffs.lcr.Carrier` (validated by that class on the way in
and out). A margin guard is set per account, with one of two scopes: ``account`` (the
account's own calls) or ``reseller`` (the calls of its customers, down the chain).
:meth:`CarrierStore.effective_guard` resolves the guard of one account; the route
selector loads everything at once with :meth:`CarrierStore.load_guard_book`.

Errors (stable codes)::

    CarrierStoreError       CARRIER_STORE_ERROR
    ├── CarrierExists       CARRIER_EXISTS      add() with an id already taken
    ├── UnknownCarrier      UNKNOWN_CARRIER     update()/remove() of a missing carrier
    └── UnknownGuardAccount UNKNOWN_ACCOUNT     a guard for an account that does not exist

Invalid fields raise ``tariffs.lcr.InvalidCarrier`` / ``InvalidMarginGuard``; driver
failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.carrier_tables import carriers, margin_guards
from storage.engine import wrap_driver_errors
from storage.tables import accounts, utcnow
from tariffs.lcr import Carrier, MarginGuard, effective_guard, resolve_guard
from tariffs.money import from_micros, to_micros

log = structlog.get_logger(__name__)

_BASIS_POINTS = Decimal(100)  # basis points per percent


class CarrierStoreError(Exception):
    """Base of carrier storage errors."""

    code = "CARRIER_STORE_ERROR"


class CarrierExists(CarrierStoreError):
    """A carrier with this id already exists."""

    code = "CARRIER_EXISTS"


class UnknownCarrier(CarrierStoreError):
    """No carrier has this id."""

    code = "UNKNOWN_CARRIER"


class UnknownGuardAccount(CarrierStoreError):
    """A margin guard names an account that does not exist."""

    code = "UNKNOWN_ACCOUNT"


class GuardScope(StrEnum):
    """Whose calls a margin guard covers."""

    ACCOUNT = "account"  # the account's own calls
    RESELLER = "reseller"  # the calls of the account's customers


@dataclass(frozen=True, slots=True)
class ScopedGuard:
    """A stored margin guard with its scope and account."""

    scope: GuardScope
    account_id: str
    guard: MarginGuard


@dataclass(frozen=True, slots=True)
class GuardBook:
    """Every margin guard and the reseller links, for in-memory resolution."""

    own: dict[str, MarginGuard] = field(default_factory=dict)
    reseller: dict[str, MarginGuard] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)

    def guard_for(self, account_id: str) -> MarginGuard | None:
        """The effective guard of ``account_id`` (``tariffs.lcr.effective_guard``)."""
        return effective_guard(account_id, self.own, self.reseller, self.parents)

    def source_for(self, account_id: str) -> ScopedGuard | None:
        """The stored guard in force for ``account_id``, with its scope and account."""
        found = resolve_guard(account_id, self.own, self.reseller, self.parents)
        if found is None:
            return None
        owner, guard = found
        scope = GuardScope.ACCOUNT if owner == account_id else GuardScope.RESELLER
        return ScopedGuard(scope, owner, guard)


def _carrier_values(carrier: Carrier) -> dict[str, Any]:
    return {
        "name": carrier.name,
        "buy_deck": carrier.buy_deck,
        "dial_template": carrier.dial_template,
        "priority": carrier.priority,
        "weight": carrier.weight,
        "enabled": carrier.enabled,
        "concurrency_limit": carrier.concurrency_limit,
        "cps_limit": carrier.cps_limit,
    }


def _carrier(row: Any) -> Carrier:
    return Carrier(
        id=row.id,
        name=row.name,
        buy_deck=row.buy_deck,
        dial_template=row.dial_template,
        priority=row.priority,
        weight=row.weight,
        enabled=bool(row.enabled),
        concurrency_limit=row.concurrency_limit,
        cps_limit=row.cps_limit,
    )


def _guard(row: Any) -> MarginGuard:
    return MarginGuard(
        min_margin=from_micros(row.min_margin_micros),
        min_margin_percent=Decimal(row.min_margin_percent_bp).scaleb(-2),
    )


class CarrierStore:
    """Add, change, list and remove carriers; get and set margin guards."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, carrier: Carrier) -> Carrier:
        """Insert a new carrier."""
        now = utcnow()
        with wrap_driver_errors("adding a carrier"):
            try:
                async with self._engine.begin() as conn:
                    if await self._fetch(conn, carrier.id) is not None:
                        raise CarrierExists(f"carrier exists: {carrier.id!r}")
                    values = _carrier_values(carrier)
                    await conn.execute(
                        insert(carriers).values(
                            id=carrier.id, created_at=now, updated_at=now, **values
                        )
                    )
            except IntegrityError as exc:  # lost a race on the same id
                raise CarrierExists(f"carrier exists: {carrier.id!r}") from exc
        log.info("carrier added", carrier=carrier.id, buy_deck=carrier.buy_deck)
        return carrier

    async def update(self, carrier: Carrier) -> Carrier:
        """Replace every field of an existing carrier."""
        with wrap_driver_errors("updating a carrier"):
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(carriers)
                    .where(carriers.c.id == carrier.id)
                    .values(updated_at=utcnow(), **_carrier_values(carrier))
                )
                if result.rowcount == 0:
                    raise UnknownCarrier(f"unknown carrier: {carrier.id!r}")
        log.info("carrier updated", carrier=carrier.id, enabled=carrier.enabled)
        return carrier

    async def remove(self, carrier_id: str) -> None:
        """Delete a carrier (rated calls keep its id as text)."""
        with wrap_driver_errors("removing a carrier"):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(carriers).where(carriers.c.id == carrier_id))
                if result.rowcount == 0:
                    raise UnknownCarrier(f"unknown carrier: {carrier_id!r}")
        log.info("carrier removed", carrier=carrier_id)

    async def get(self, carrier_id: str) -> Carrier | None:
        """One carrier, or None."""
        with wrap_driver_errors("reading a carrier"):
            async with self._engine.connect() as conn:
                return await self._fetch(conn, carrier_id)

    async def list(self) -> builtins.list[Carrier]:
        """Every carrier, enabled or not, by id."""
        with wrap_driver_errors("listing carriers"):
            async with self._engine.connect() as conn:
                rows = await conn.execute(select(carriers).order_by(carriers.c.id))
                return [_carrier(row) for row in rows]

    async def set_guard(self, scope: GuardScope, account_id: str, guard: MarginGuard) -> None:
        """Set (or replace) the margin guard of one account and scope."""
        values = {
            "min_margin_micros": to_micros(guard.min_margin),
            "min_margin_percent_bp": int(guard.min_margin_percent * _BASIS_POINTS),
            "updated_at": utcnow(),
        }
        key = (margin_guards.c.scope == str(scope)) & (margin_guards.c.account_id == account_id)
        with wrap_driver_errors("setting a margin guard"):
            async with self._engine.begin() as conn:
                known = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
                if known.first() is None:
                    raise UnknownGuardAccount(f"unknown account: {account_id!r}")
                result = await conn.execute(update(margin_guards).where(key).values(**values))
                if result.rowcount == 0:
                    await conn.execute(
                        insert(margin_guards).values(
                            scope=str(scope), account_id=account_id, **values
                        )
                    )
        log.info(
            "margin guard set",
            scope=str(scope),
            account_id=account_id,
            min_margin=str(guard.min_margin),
            min_margin_percent=str(guard.min_margin_percent),
        )

    async def clear_guard(self, scope: GuardScope, account_id: str) -> bool:
        """Remove the margin guard of one account and scope; False when there was none."""
        key = (margin_guards.c.scope == str(scope)) & (margin_guards.c.account_id == account_id)
        with wrap_driver_errors("clearing a margin guard"):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(margin_guards).where(key))
        return bool(result.rowcount)

    async def get_guard(self, scope: GuardScope, account_id: str) -> MarginGuard | None:
        """The guard stored for one account and scope (no inheritance), or None."""
        query = select(margin_guards).where(
            margin_guards.c.scope == str(scope), margin_guards.c.account_id == account_id
        )
        with wrap_driver_errors("reading a margin guard"):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return None if row is None else _guard(row)

    async def list_guards(self) -> builtins.list[ScopedGuard]:
        """Every stored guard, by account then scope."""
        query = select(margin_guards).order_by(margin_guards.c.account_id, margin_guards.c.scope)
        with wrap_driver_errors("listing margin guards"):
            async with self._engine.connect() as conn:
                rows = await conn.execute(query)
                return [ScopedGuard(GuardScope(r.scope), r.account_id, _guard(r)) for r in rows]

    async def load_guard_book(self) -> GuardBook:
        """Every guard and every reseller link (``accounts.parent_id``), in one snapshot."""
        book = GuardBook()
        with wrap_driver_errors("loading margin guards"):
            async with self._engine.connect() as conn:
                for row in await conn.execute(select(margin_guards)):
                    target = book.own if row.scope == GuardScope.ACCOUNT else book.reseller
                    target[row.account_id] = _guard(row)
                if book.reseller:
                    links = select(accounts.c.id, accounts.c.parent_id).where(
                        accounts.c.parent_id.is_not(None)
                    )
                    for row in await conn.execute(links):
                        book.parents[row.id] = row.parent_id
        return book

    async def effective_guard(self, account_id: str) -> MarginGuard | None:
        """The guard in force for ``account_id``: its own, else its reseller chain's."""
        return (await self.load_guard_book()).guard_for(account_id)

    async def guard_in_force(self, account_id: str) -> ScopedGuard | None:
        """Like :meth:`effective_guard`, naming the account and scope it is set on."""
        return (await self.load_guard_book()).source_for(account_id)

    @staticmethod
    async def _fetch(conn: AsyncConnection, carrier_id: str) -> Carrier | None:
        row = (await conn.execute(select(carriers).where(carriers.c.id == carrier_id))).first()
        return None if row is None else _carrier(row)
