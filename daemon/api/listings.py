"""Keyset-paged reads of one account's ledger entries and rated calls (SQL).

A page is ``limit`` rows and an opaque cursor to the next one. The cursor is the last
row's sort key (base64url text), so a page is one indexed range scan whatever its
depth, and rows written meanwhile never shift a page (no OFFSET):

- ledger entries: newest first by ``id`` (index ``account_id, id``);
- rated calls: newest start first by ``(started_at_us, id)``; ``from`` / ``to`` select
  calls by their start, as the usage periods and re-rating do.

:meth:`Listings.ledger_batches` / :meth:`Listings.call_batches` walk every matching row
page by page (what a CSV export streams): memory is one page, and no transaction is held
open between pages.

Errors: :class:`InvalidCursor` (a ``ValueError``) for a cursor this module did not make;
driver failures are ``storage.engine.StorageError``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import wrap_driver_errors
from storage.tables import ledger_entries, rated_calls

EXPORT_BATCH = 1000
"""Rows read per query while streaming an export."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidCursor(ValueError):
    """A cursor that is not one of this listing's."""


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which entries of one account: created in ``[since, until)``, of one ``kind``."""

    account_id: str
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls of one account: started in ``[since, until)``, by disposition and the
    callee's leading digits (a leading '+' of the callee ignored)."""

    account_id: str
    since: datetime | None = None
    until: datetime | None = None
    disposition: str | None = None
    destination_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one page and the cursor of the next (None on the last page)."""

    rows: list[Any]
    next_cursor: str | None


def encode_cursor(kind: str, *values: int) -> str:
    """An opaque cursor for a sort key of ints."""
    text = ":".join([kind, *(str(value) for value in values)])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, arity: int) -> tuple[int, ...]:
    """The sort key of a cursor made by :func:`encode_cursor` for ``kind``."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, *parts = text.split(":")
        values = tuple(int(part) for part in parts)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("not a cursor of this listing") from exc
    if tag != kind or len(values) != arity:
        raise InvalidCursor("not a cursor of this listing")
    return values


def check_cursor(listing: Literal["ledger", "calls"], cursor: str | None) -> None:
    """Raise :class:`InvalidCursor` unless ``cursor`` is None or one of ``listing``'s."""
    if cursor is not None:
        tag, arity = _CURSORS[listing]
        decode_cursor(tag, cursor, arity)


_CURSORS = {"ledger": ("L", 1), "calls": ("C", 2)}


def epoch_us(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime (the rated calls' time columns)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _ledger_query(where: LedgerFilter, after: tuple[int, ...] | None) -> Select[Any]:
    column = ledger_entries.c
    query = select(ledger_entries).where(column.account_id == where.account_id)
    if where.since is not None:
        query = query.where(column.created_at >= where.since)
    if where.until is not None:
        query = query.where(column.created_at < where.until)
    if where.kind is not None:
        query = query.where(column.kind == where.kind)
    if after is not None:
        query = query.where(column.id < after[0])
    return query.order_by(column.id.desc())


def _calls_query(where: CallFilter, after: tuple[int, ...] | None) -> Select[Any]:
    column = rated_calls.c
    query = select(rated_calls).where(column.account_id == where.account_id)
    if where.since is not None:
        query = query.where(column.started_at_us >= epoch_us(where.since))
    if where.until is not None:
        query = query.where(column.started_at_us < epoch_us(where.until))
    if where.disposition is not None:
        query = query.where(column.disposition == where.disposition)
    if where.destination_prefix is not None:
        digits = where.destination_prefix.removeprefix("+")
        query = query.where(
            or_(
                column.callee.startswith(digits, autoescape=True),
                column.callee.startswith("+" + digits, autoescape=True),
            )
        )
    if after is not None:
        started, last_id = after
        query = query.where(
            or_(
                column.started_at_us < started,
                and_(column.started_at_us == started, column.id < last_id),
            )
        )
    return query.order_by(column.started_at_us.desc(), column.id.desc())


def _ledger_key(row: Any) -> str:
    return encode_cursor("L", int(row.id))


def _call_key(row: Any) -> str:
    return encode_cursor("C", int(row.started_at_us), int(row.id))


class Listings:
    """One account's ledger entries and rated calls, page by page."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ledger_page(
        self, where: LedgerFilter, *, limit: int, cursor: str | None = None
    ) -> Page:
        """One page of entries, newest first."""
        after = None if cursor is None else decode_cursor("L", cursor, 1)
        return await self._page(_ledger_query(where, after), limit, _ledger_key, "ledger")

    async def call_page(self, where: CallFilter, *, limit: int, cursor: str | None = None) -> Page:
        """One page of rated calls, newest start first."""
        after = None if cursor is None else decode_cursor("C", cursor, 2)
        return await self._page(_calls_query(where, after), limit, _call_key, "rated calls")

    async def ledger_batches(
        self, where: LedgerFilter, cursor: str | None = None
    ) -> AsyncIterator[list[Any]]:
        """Every matching entry from ``cursor`` on, one batch of rows at a time."""
        while True:
            page = await self.ledger_page(where, limit=EXPORT_BATCH, cursor=cursor)
            if page.rows:
                yield page.rows
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def call_batches(
        self, where: CallFilter, cursor: str | None = None
    ) -> AsyncIterator[list[Any]]:
        """Every matching rated call from ``cursor`` on, one batch of rows at a time."""
        while True:
            page = await self.call_page(where, limit=EXPORT_BATCH, cursor=cursor)
            if page.rows:
                yield page.rows
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _page(
        self, query: Select[Any], limit: int, key: Callable[[Any], str], what: str
    ) -> Page:
        with wrap_driver_errors(f"listing {what}"):
            async with self._engine.connect() as conn:
                rows = list(await conn.execute(query.limit(limit + 1)))
        if len(rows) > limit:
            return Page(rows[:limit], key(rows[limit - 1]))
        return Page(rows, None)
