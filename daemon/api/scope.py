"""Which accounts a principal sees, read from SQL (the account tree by ``parent_id``).

An operator sees every account; a reseller sees its own account and every descendant
(its customers, their customers, ...); a customer sees only its own account. The tree is
walked with recursive CTEs (PostgreSQL and SQLite alike), so a check is one query
whatever the depth. Listings are ordered by id and paged by a cursor (the last id of
the previous page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account
from balance.api_keys import Principal
from storage.engine import wrap_driver_errors
from storage.tables import accounts, ledger_entries

_ACCOUNT_FIELDS = tuple(f.name for f in fields(Account))


@dataclass(frozen=True, slots=True)
class AccountPage:
    """One page of accounts and the cursor of the next page (None on the last page)."""

    accounts: list[Account]
    next_cursor: str | None


def _account(row: Any) -> Account:
    return Account(**{name: getattr(row, name) for name in _ACCOUNT_FIELDS})


def _subtree_ids(root_id: str) -> Select[Any]:
    """``SELECT id`` of ``root_id`` and all its descendants."""
    tree = select(accounts.c.id).where(accounts.c.id == root_id).cte("subtree", recursive=True)
    tree = tree.union_all(select(accounts.c.id).where(accounts.c.parent_id == tree.c.id))
    return select(tree.c.id)


def _ancestor_ids(account_id: str) -> Select[Any]:
    """``SELECT id`` of ``account_id`` and all its ancestors."""
    chain = (
        select(accounts.c.id, accounts.c.parent_id)
        .where(accounts.c.id == account_id)
        .cte("ancestors", recursive=True)
    )
    chain = chain.union_all(
        select(accounts.c.id, accounts.c.parent_id).where(accounts.c.id == chain.c.parent_id)
    )
    return select(chain.c.id)


class AccountScope:
    """Scoped reads of accounts and balances for the management API."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def visible(self, principal: Principal, account_id: str) -> Account | None:
        """The account if the principal may see it; None if unknown or out of scope."""
        query = select(accounts).where(accounts.c.id == account_id)
        if principal.role == "customer":
            if account_id != principal.account_id:
                return None
        elif principal.role == "reseller":
            query = query.where(literal(principal.account_id).in_(_ancestor_ids(account_id)))
        with wrap_driver_errors("reading an account"):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return None if row is None else _account(row)

    async def page(
        self,
        principal: Principal,
        *,
        limit: int,
        cursor: str | None = None,
        parent_id: str | None = None,
    ) -> AccountPage:
        """The accounts the principal sees (only ``parent_id``'s children when given)."""
        query = select(accounts).order_by(accounts.c.id).limit(limit + 1)
        if principal.role == "customer":
            if parent_id is not None:  # a customer sees no account but its own
                return AccountPage([], None)
            query = query.where(accounts.c.id == principal.account_id)
        elif principal.role == "reseller" and principal.account_id is not None:
            query = query.where(accounts.c.id.in_(_subtree_ids(principal.account_id)))
        if parent_id is not None:
            query = query.where(accounts.c.parent_id == parent_id)
        if cursor is not None:
            query = query.where(accounts.c.id > cursor)
        with wrap_driver_errors("listing accounts"):
            async with self._engine.connect() as conn:
                found = [_account(row) for row in await conn.execute(query)]
        if len(found) > limit:
            return AccountPage(found[:limit], found[limit - 1].id)
        return AccountPage(found, None)

    async def balances(self, account_ids: Sequence[str]) -> dict[str, int]:
        """The SQL ledger balance of each account (0 for one without entries)."""
        if not account_ids:
            return {}
        query = (
            select(ledger_entries.c.account_id, func.sum(ledger_entries.c.amount_micros))
            .where(ledger_entries.c.account_id.in_(list(account_ids)))
            .group_by(ledger_entries.c.account_id)
        )
        with wrap_driver_errors("reading balances"):
            async with self._engine.connect() as conn:
                sums = {row[0]: int(row[1]) for row in await conn.execute(query)}
        return {account_id: sums.get(account_id, 0) for account_id in account_ids}
