"""Bundle definitions and assignments in SQL, and the bundled seconds rated calls used.

``bundles`` and ``bundle_assignments`` (``storage.plan_tables``): a bundle's seconds per
period and prefixes (JSON), and which account holds which bundle from ``valid_from``
(inclusive) to ``valid_to`` (exclusive, NULL = open). What a period used is summed from
``rated_calls.bundle`` / ``bundle_seconds`` (:meth:`BundleStore.used_seconds`); the live
balances are in Redis (``balance.bundles``).

Errors (stable codes)::

    BundleStoreError            BUNDLE_STORE_ERROR
    ├── BundleExists            BUNDLE_EXISTS    create() with a name already taken
    ├── UnknownBundle           UNKNOWN_BUNDLE   no bundle has this name
    └── UnknownBundleAccount    UNKNOWN_ACCOUNT  no account has this id

Invalid definitions raise ``tariffs.bundles.InvalidBundle``; driver failures are raised
as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import structlog
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.engine import wrap_driver_errors
from storage.plan_tables import bundle_assignments, bundles
from storage.tables import accounts, rated_calls, utcnow
from tariffs.bundles import Bundle
from tariffs.tiers import period_bounds_us

log = structlog.get_logger(__name__)


class BundleStoreError(Exception):
    """Base of bundle storage errors."""

    code: ClassVar[str] = "BUNDLE_STORE_ERROR"


class BundleExists(BundleStoreError):
    """A bundle with this name already exists."""

    code: ClassVar[str] = "BUNDLE_EXISTS"


class UnknownBundle(BundleStoreError):
    """No bundle has this name."""

    code: ClassVar[str] = "UNKNOWN_BUNDLE"


class UnknownBundleAccount(BundleStoreError):
    """An assignment names an account that does not exist."""

    code: ClassVar[str] = "UNKNOWN_ACCOUNT"


@dataclass(frozen=True, slots=True)
class Assignment:
    """An account holds a bundle from ``valid_from`` (inclusive) to ``valid_to`` (exclusive)."""

    account_id: str
    bundle: str
    valid_from: datetime
    valid_to: datetime | None = None

    def active(self, at: datetime) -> bool:
        """True when the assignment covers a call starting at ``at``."""
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


def _bundle(row: Any) -> Bundle:
    return Bundle(row.name, int(row.seconds), tuple(json.loads(row.prefixes)), row.period)


def _assignment(row: Any) -> Assignment:
    return Assignment(row.account_id, row.bundle, row.valid_from, row.valid_to)


class BundleStore:
    """Bundle definitions and assignments in SQL, and the seconds rated calls used."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, bundle: Bundle) -> None:
        """Add a new bundle definition."""
        now = utcnow()
        values = {
            "name": bundle.name,
            "seconds": bundle.seconds,
            "prefixes": json.dumps(list(bundle.prefixes)),
            "period": bundle.period,
            "created_at": now,
            "updated_at": now,
        }
        with wrap_driver_errors("creating a bundle"):
            try:
                async with self._engine.begin() as conn:
                    if await self._bundle_row(conn, bundle.name) is not None:
                        raise BundleExists(f"bundle exists: {bundle.name!r}")
                    await conn.execute(insert(bundles).values(**values))
            except IntegrityError as exc:  # lost a race on the same name
                raise BundleExists(f"bundle exists: {bundle.name!r}") from exc
        log.info("bundle created", bundle=bundle.name, seconds=bundle.seconds)

    async def get(self, name: str) -> Bundle | None:
        """The bundle named ``name``, or None."""
        with wrap_driver_errors("reading a bundle"):
            async with self._engine.connect() as conn:
                row = await self._bundle_row(conn, name)
        return None if row is None else _bundle(row)

    async def list(self) -> builtins.list[Bundle]:
        """Every bundle, by name."""
        with wrap_driver_errors("listing bundles"):
            async with self._engine.connect() as conn:
                rows = await conn.execute(select(bundles).order_by(bundles.c.name))
                return [_bundle(row) for row in rows]

    async def assign(
        self,
        account_id: str,
        bundle: str,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
    ) -> Assignment:
        """Give ``account_id`` the bundle from ``valid_from`` (now) to ``valid_to`` (open)."""
        start = valid_from or utcnow()
        if valid_to is not None and valid_to <= start:
            raise BundleStoreError(f"valid_to {valid_to} is not after valid_from {start}")
        with wrap_driver_errors("assigning a bundle"):
            async with self._engine.begin() as conn:
                found = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
                if found.first() is None:
                    raise UnknownBundleAccount(f"unknown account: {account_id!r}")
                if await self._bundle_row(conn, bundle) is None:
                    raise UnknownBundle(f"unknown bundle: {bundle!r}")
                await conn.execute(
                    insert(bundle_assignments).values(
                        account_id=account_id,
                        bundle=bundle,
                        valid_from=start,
                        valid_to=valid_to,
                        created_at=utcnow(),
                    )
                )
        log.info("bundle assigned", account_id=account_id, bundle=bundle)
        return Assignment(account_id, bundle, start, valid_to)

    async def unassign(self, account_id: str, bundle: str, at: datetime | None = None) -> int:
        """End the account's open assignments of ``bundle`` at ``at`` (now); how many."""
        end = at or utcnow()
        table = bundle_assignments.c
        with wrap_driver_errors("ending a bundle assignment"):
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(bundle_assignments)
                    .where(
                        table.account_id == account_id,
                        table.bundle == bundle,
                        table.valid_from < end,
                        or_(table.valid_to.is_(None), table.valid_to > end),
                    )
                    .values(valid_to=end)
                )
        return int(result.rowcount)

    async def assignments(self, account_id: str | None = None) -> builtins.list[Assignment]:
        """Assignments (of one account, or all), by account, start and bundle."""
        table = bundle_assignments.c
        query = select(bundle_assignments).order_by(
            table.account_id, table.valid_from, table.bundle
        )
        if account_id is not None:
            query = query.where(table.account_id == account_id)
        with wrap_driver_errors("listing bundle assignments"):
            async with self._engine.connect() as conn:
                return [_assignment(row) for row in await conn.execute(query)]

    async def used_seconds(self, account_id: str, period: str, tz: str = "UTC") -> dict[str, int]:
        """Bundled seconds the account's rated calls used in ``period``, by bundle."""
        start_us, end_us = period_bounds_us(period, tz)
        column = rated_calls.c
        query = (
            select(column.bundle, func.coalesce(func.sum(column.bundle_seconds), 0))
            .where(
                column.account_id == account_id,
                column.started_at_us >= start_us,
                column.started_at_us < end_us,
                column.bundle != "",
            )
            .group_by(column.bundle)
        )
        with wrap_driver_errors("summing bundled seconds"):
            async with self._engine.connect() as conn:
                return {name: int(used) for name, used in await conn.execute(query)}

    @staticmethod
    async def _bundle_row(conn: AsyncConnection, name: str) -> Any:
        return (await conn.execute(select(bundles).where(bundles.c.name == name))).first()
