"""Rated calls and their ledger charges, written exactly once, in batches.

``RatedCallWriter.write`` stores many rated calls in ONE transaction: an
``INSERT ... ON CONFLICT (switch_id, call_id) DO NOTHING`` tells which calls are new, and
only those get their double-entry charge (account ``-cost``, ``sys:revenue`` ``+cost``;
keys ``call:{switch}:{call}:charge`` and ``...:revenue``). Rows are inserted in key order
so racing writers never deadlock; exactly once holds by the unique keys, whatever the
retries or writers. The charges of new calls cannot conflict (their keys derive from the
call, which this transaction just created), so they are plain inserts.

A record with a reseller ``chain`` (``balance.chain_ledger``) gets the whole chain's
entries instead (customer -retail, each reseller +sold -wholesale, ``sys:revenue`` +the
top price) and one ``rated_call_charges`` row per level, in the same transaction. A batch
without any chain takes exactly the paths below; one with a chain inserts the calls with
the same statements minus the server-side charges, then its entries by ``executemany``.

Per backend (a batch of 1,000 calls: about a tenth of the Python of row dicts through
SQLAlchemy, and both tables written by the database in one go):

- PostgreSQL: one statement, a data-modifying CTE, inserts the calls ``ON CONFLICT DO
  NOTHING RETURNING`` and, server-side, the two charges of every call it returned (a new
  one). A batch of 100 calls or more is first ``COPY``-ed into a session-temporary table
  (``ON COMMIT DELETE ROWS``) in the same transaction, and read back in key order; a
  smaller one arrives as one array per column (``unnest``), a single atomic statement.
- SQLite: the transaction holds the write lock from its start (``BEGIN IMMEDIATE``,
  ``storage.engine``), so ids above the table's current maximum are ours: the calls go
  in with explicit ids through one ``executemany`` (``ON CONFLICT DO NOTHING``), the
  ids above that maximum are the new calls, and one ``INSERT ... SELECT`` over them
  writes their two charges each inside SQLite (nothing read back into Python). When the
  insert's row count equals the batch, every call is new; otherwise the new ids say
  which. Were the lock assumption ever wrong, an id collision fails the whole batch
  (primary key), it never mixes two writers' calls.

Errors (stable codes)::

    RatedCallError          RATED_CALL_ERROR
    └── InvalidRatedCall    INVALID_RATED_CALL  a record's field is invalid (names record and field)

Driver failures are raised as ``storage.engine.StorageError`` chained ``from`` the driver.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

import asyncpg
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.chain_ledger import Chain, ChainCharge, chain_problem, rows_for_new_calls
from balance.ledger import SYS_REVENUE
from storage.engine import StorageError, wrap_driver_errors
from storage.tables import rated_calls, utcnow

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (switch_id, call_id)


class RatedCallError(Exception):
    """Base of rated-call errors."""

    code = "RATED_CALL_ERROR"


class InvalidRatedCall(RatedCallError):
    """A rated-call record has an invalid field."""

    code = "INVALID_RATED_CALL"


@dataclass(frozen=True, slots=True)
class RatedCallRecord:
    """One finished, rated call (times in epoch microseconds, money in micro-units)."""

    switch_id: str
    call_id: str
    account_id: str
    caller: str
    callee: str
    started_at_us: int
    answered_at_us: int | None
    ended_at_us: int
    billsec_us: int
    billable_seconds: int
    cost_micros: int
    currency: str
    deck: str
    prefix: str
    destination: str
    rate_micros: int
    disposition: str
    cause: str
    carrier: str = ""  # the LCR carrier assumed for the call ('' = none)
    buy_cost_micros: int = 0  # what that carrier charges for the call
    margin_micros: int = 0  # cost_micros - buy_cost_micros (0 without a carrier)
    bundle: str = ""  # the bundle whose seconds the call used ('' = none)
    bundle_seconds: int = 0  # billable seconds taken from that bundle
    # the tier counter's position (calls, or billable seconds for a minutes counter) the
    # call's tier discount was computed from; None: the account had no tier plan
    tier_usage: int | None = None
    # the reseller levels above the account and their wholesale costs (balance.chain_ledger);
    # not a column: written to rated_call_charges and to the call's ledger transaction
    chain: tuple[ChainCharge, ...] = ()


FIELDS = tuple(f.name for f in fields(RatedCallRecord) if f.name != "chain")
_LIMITS = {"switch_id": 64, "call_id": 128, "account_id": 64, "deck": 64, "prefix": 32}
_LIMITS["carrier"] = 64
_INTS: tuple[str, ...] = ("started_at_us", "ended_at_us", "billsec_us", "billable_seconds")
_INTS += ("cost_micros", "buy_cost_micros", "margin_micros")
_LIMITS["bundle"] = 64
_INTS += ("bundle_seconds",)


def _check(index: int, record: RatedCallRecord) -> None:
    def bad(field: str, why: str) -> InvalidRatedCall:
        return InvalidRatedCall(
            f"record {index} ({record.switch_id!r}/{record.call_id!r}) {field}: {why}"
        )

    for field, limit in _LIMITS.items():
        value = getattr(record, field)
        if not isinstance(value, str) or len(value) > limit:
            raise bad(field, f"a string of at most {limit} characters, got {value!r}")
    if not record.switch_id or not record.call_id:
        raise bad("call_id" if record.switch_id else "switch_id", "must not be empty")
    for field in _INTS:
        value = getattr(record, field)
        if type(value) is not int:
            raise bad(field, f"must be an int, got {value!r}")
    if len(record.currency) != 3:
        raise bad("currency", f"3 letters, got {record.currency!r}")
    tier_usage = record.tier_usage
    if tier_usage is not None and type(tier_usage) is not int:
        raise bad("tier_usage", f"None or an int, got {tier_usage!r}")
    problem = chain_problem(record.chain)
    if problem is not None:
        raise bad(*problem)


def _signature(answered: type, tier_usage: type) -> tuple[type, ...]:
    ints = {*_INTS, "rate_micros"}
    optional = {"answered_at_us": answered, "tier_usage": tier_usage}
    return tuple(optional.get(name, int if name in ints else str) for name in FIELDS)


_SIGNATURES = frozenset(
    _signature(answered, tier_usage)
    for answered in (int, type(None))
    for tier_usage in (int, type(None))
)
_SWITCH, _CALL, _ACCOUNT, _CURRENCY, _DECK, _PREFIX = (
    FIELDS.index(name)
    for name in ("switch_id", "call_id", "account_id", "currency", "deck", "prefix")
)
_CARRIER = FIELDS.index("carrier")


def _plainly_valid(values: tuple[Any, ...]) -> bool:
    """The common case of ``_check`` at C speed (False: let ``_check`` decide)."""
    return (
        tuple(map(type, values)) in _SIGNATURES
        and 0 < len(values[_SWITCH]) <= 64
        and 0 < len(values[_CALL]) <= 128
        and len(values[_ACCOUNT]) <= 64
        and len(values[_CURRENCY]) == 3
        and len(values[_DECK]) <= 64
        and len(values[_PREFIX]) <= 32
        and len(values[_CARRIER]) <= 64
    )


_values = attrgetter(*FIELDS)  # a record's column values, in FIELDS order
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error, OSError)

_COLUMNS = ", ".join(FIELDS)
_PG_TYPES = {"answered_at_us": "int8", "billable_seconds": "int4", "tier_usage": "int8"}
_PG_TYPES |= {name: "int8" for name in (*_INTS, "rate_micros") if name not in _PG_TYPES}
_PG_STAGE = "rated_call_batch"
_PG_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLUMNS} FROM rated_calls WITH NO DATA"
)
_LEVEL_COLUMNS = "rated_call_id, level, account_id, cost_micros, deck, rate_micros"
_PG_COPY_FROM = 100  # calls: COPY costs three round trips, arrays cost Python per value


def _pg_write(calls_source: str) -> str:
    """The one statement that inserts the calls (``$1`` the time, ``$2`` the revenue
    account) ON CONFLICT DO NOTHING and the two charges of each call it inserted."""
    return (
        f"WITH new AS (INSERT INTO rated_calls ({_COLUMNS}, rated_at) "
        f"SELECT {_COLUMNS}, $1::timestamptz FROM {calls_source} "
        "ON CONFLICT (switch_id, call_id) DO NOTHING "
        "RETURNING id, switch_id, call_id, account_id, cost_micros, destination), "
        "charges AS (INSERT INTO ledger_entries (idempotency_key, txn_key, account_id, "
        "amount_micros, kind, rated_call_id, description, created_at) "
        "SELECT 'call:' || n.switch_id || ':' || n.call_id || ':' || side.name, "
        "'call:' || n.switch_id || ':' || n.call_id, "
        "CASE side.name WHEN 'charge' THEN n.account_id ELSE $2::text END, "
        "CASE side.name WHEN 'charge' THEN -n.cost_micros ELSE n.cost_micros END, "
        "'charge', n.id, n.destination, $1::timestamptz "
        "FROM new AS n CROSS JOIN (VALUES ('charge'), ('revenue')) AS side (name) "
        "WHERE n.cost_micros <> 0) "
        "SELECT switch_id, call_id FROM new"
    )


# in key order (bytes, as Python sorts str), as the array path sends them: one lock order
_PG_WRITE_STAGED = _pg_write(f'{_PG_STAGE} ORDER BY switch_id COLLATE "C", call_id COLLATE "C"')
_PG_WRITE_ARRAYS = _pg_write(
    "unnest("
    + ", ".join(f"${i}::{_PG_TYPES.get(name, 'text')}[]" for i, name in enumerate(FIELDS, 3))
    + f") AS batch ({_COLUMNS})"
)


async def _write_pg(
    conn: AsyncConnection, values: list[tuple[Any, ...]], now: datetime
) -> builtins.list[Key]:
    """The calls and the charges of the new ones, atomically; the new calls' keys.

    A small batch goes as one array per column in the one statement (atomic by itself);
    a large one is COPied into a temporary table first, in one transaction.
    """
    raw = await _driver_connection(conn)
    if len(values) < _PG_COPY_FROM:
        columns = [list(column) for column in zip(*values, strict=True)]
        result = await raw.fetch(_PG_WRITE_ARRAYS, now, SYS_REVENUE, *columns)
    else:
        async with raw.transaction():
            await raw.execute(_PG_CREATE_STAGE)
            await raw.copy_records_to_table(_PG_STAGE, records=values, columns=FIELDS)
            result = await raw.fetch(_PG_WRITE_STAGED, now, SYS_REVENUE)
    return [(r["switch_id"], r["call_id"]) for r in result]


def _pg_insert_calls(calls_source: str) -> str:
    """Insert the calls (``$1`` the time) ON CONFLICT DO NOTHING; the new ones' rows."""
    return (
        f"INSERT INTO rated_calls ({_COLUMNS}, rated_at) "
        f"SELECT {_COLUMNS}, $1::timestamptz FROM {calls_source} "
        "ON CONFLICT (switch_id, call_id) DO NOTHING "
        "RETURNING id, switch_id, call_id, account_id, cost_micros, destination"
    )


_PG_INSERT_STAGED = _pg_insert_calls(
    f'{_PG_STAGE} ORDER BY switch_id COLLATE "C", call_id COLLATE "C"'
)
_PG_INSERT_ARRAYS = _pg_insert_calls(
    "unnest("
    + ", ".join(f"${i}::{_PG_TYPES.get(name, 'text')}[]" for i, name in enumerate(FIELDS, 2))
    + f") AS batch ({_COLUMNS})"
)
_PG_INSERT_ENTRIES = (
    "INSERT INTO ledger_entries (idempotency_key, txn_key, account_id, amount_micros, "
    "kind, rated_call_id, description, created_at) "
    "VALUES ($1, $2, $3, $4, 'charge', $5, $6, $7)"
)
_PG_INSERT_LEVELS = (
    f"INSERT INTO rated_call_charges ({_LEVEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
)


async def _write_pg_chained(
    conn: AsyncConnection, values: list[tuple[Any, ...]], now: datetime, chains: dict[Key, Chain]
) -> builtins.list[Key]:
    """A batch with reseller chains: the calls, then every new call's entries (its chain's
    too) and its ``rated_call_charges``, all in one transaction."""
    raw = await _driver_connection(conn)
    async with raw.transaction():
        if len(values) < _PG_COPY_FROM:
            columns = [list(column) for column in zip(*values, strict=True)]
            new = await raw.fetch(_PG_INSERT_ARRAYS, now, *columns)
        else:
            await raw.execute(_PG_CREATE_STAGE)
            await raw.copy_records_to_table(_PG_STAGE, records=values, columns=FIELDS)
            new = await raw.fetch(_PG_INSERT_STAGED, now)
        entries, levels = rows_for_new_calls((tuple(r) for r in new), chains)
        if entries:
            await raw.executemany(_PG_INSERT_ENTRIES, [(*e, now) for e in entries])
        if levels:
            await raw.executemany(_PG_INSERT_LEVELS, levels)
    return [(r["switch_id"], r["call_id"]) for r in new]


async def _driver_connection(conn: AsyncConnection) -> Any:
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    return raw


_SQLITE_INSERT_CALLS = (
    f"INSERT INTO rated_calls (id, {', '.join(FIELDS)}, rated_at) "
    f"VALUES ({', '.join('?' * (len(FIELDS) + 2))}) "
    "ON CONFLICT (switch_id, call_id) DO NOTHING"
)
_SQLITE_INSERT_CHARGES = (
    "INSERT INTO ledger_entries (idempotency_key, txn_key, account_id, amount_micros, "
    "kind, rated_call_id, description, created_at) VALUES (?, ?, ?, ?, 'charge', ?, ?, ?)"
)
_SQLITE_INSERT_LEVELS = (
    f"INSERT INTO rated_call_charges ({_LEVEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
)


_SQLITE_SELECT_NEW = (
    "SELECT id, switch_id, call_id, account_id, cost_micros, destination "
    "FROM rated_calls WHERE id > ? ORDER BY id"
)
# the two charges of every plain call above ``$3`` (an id), in call then side order
_SQLITE_INSERT_NEW_CHARGES = (
    "INSERT INTO ledger_entries (idempotency_key, txn_key, account_id, amount_micros, "
    "kind, rated_call_id, description, created_at) "
    "SELECT 'call:' || c.switch_id || ':' || c.call_id || ':' || side.name, "
    "'call:' || c.switch_id || ':' || c.call_id, "
    "CASE side.name WHEN 'charge' THEN c.account_id ELSE ?2 END, "
    "CASE side.name WHEN 'charge' THEN -c.cost_micros ELSE c.cost_micros END, "
    "'charge', c.id, c.destination, ?1 "
    "FROM rated_calls AS c CROSS JOIN (SELECT 'charge' AS name, 0 AS n "
    "UNION ALL SELECT 'revenue', 1) AS side "
    "WHERE c.id > ?3 AND c.cost_micros <> 0 ORDER BY c.id, side.n"
)


async def _write_sqlite(
    conn: AsyncConnection,
    values: list[tuple[Any, ...]],
    now: datetime,
    chains: dict[Key, Chain] | None = None,
) -> builtins.list[Key]:
    """Calls with explicit ids above the current maximum, then the new calls' charges."""
    raw = await _driver_connection(conn)
    stamp = rated_calls.c.rated_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    stored_now = stamp(now) if stamp is not None else now
    async with raw.execute("SELECT coalesce(max(id), 0) FROM rated_calls") as cursor:
        (highest,) = await cursor.fetchone()
    async with raw.executemany(
        _SQLITE_INSERT_CALLS,
        [(highest + n, *call, stored_now) for n, call in enumerate(values, start=1)],
    ) as cursor:
        inserted = cursor.rowcount
    if chains:  # a reseller chain: its entries and rated_call_charges (balance.chain_ledger)
        async with raw.execute(_SQLITE_SELECT_NEW, (highest,)) as cursor:
            new = list(await cursor.fetchall())
        entries, levels = rows_for_new_calls(new, chains)
        if entries:
            await raw.executemany(_SQLITE_INSERT_CHARGES, [(*e, stored_now) for e in entries])
        if levels:
            await raw.executemany(_SQLITE_INSERT_LEVELS, levels)
        return [(switch_id, call_id) for _, switch_id, call_id, *_rest in new]
    # plain calls: their two charges each, built by SQLite from the rows just inserted
    async with raw.execute(_SQLITE_INSERT_NEW_CHARGES, (stored_now, SYS_REVENUE, highest)):
        pass
    if inserted == len(values):  # no duplicate: every call is new
        return [(call[_SWITCH], call[_CALL]) for call in values]
    # call n of the batch got id highest + n + 1, if it was inserted
    async with raw.execute("SELECT id FROM rated_calls WHERE id > ?", (highest,)) as cursor:
        ids = await cursor.fetchall()
    return [(values[i - highest - 1][_SWITCH], values[i - highest - 1][_CALL]) for (i,) in ids]


def _record(row: Any) -> RatedCallRecord:
    return RatedCallRecord(**{name: getattr(row, name) for name in FIELDS})


class RatedCallWriter:
    """Writes rated calls with their ledger charges, and reads them back."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, records: Sequence[RatedCallRecord]) -> builtins.list[bool]:
        """Write a batch in one transaction; per record, True when it was newly written."""
        first: dict[Key, tuple[int, tuple[Any, ...]]] = {}
        chains: dict[Key, Chain] = {}
        for index, record in enumerate(records):
            row = _values(record)
            if record.chain:
                _check(index, record)
                if (row[_SWITCH], row[_CALL]) not in first:
                    chains[row[_SWITCH], row[_CALL]] = record.chain
            elif not _plainly_valid(row):
                _check(index, record)
            first.setdefault((row[_SWITCH], row[_CALL]), (index, row))
        if not first:
            return []
        values = [first[key][1] for key in sorted(first)]
        now = utcnow()
        try:
            with wrap_driver_errors("writing rated calls"):
                if self._engine.dialect.name == "postgresql":
                    async with self._engine.connect() as conn:  # the driver's own transaction
                        if chains:
                            new_keys = await _write_pg_chained(conn, values, now, chains)
                        else:
                            new_keys = await _write_pg(conn, values, now)
                else:
                    async with self._engine.begin() as conn:  # BEGIN IMMEDIATE
                        new_keys = await _write_sqlite(conn, values, now, chains)
        except _DRIVER_ERRORS as exc:  # raised by the driver calls, past SQLAlchemy
            raise StorageError(f"writing rated calls failed: {type(exc).__name__}: {exc}") from exc
        written = [False] * len(records)
        for key in new_keys:
            written[first[key][0]] = True
        return written

    async def list(
        self, account_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[RatedCallRecord]:
        """Rated calls, newest (by end time) first, optionally of one account."""
        query = select(rated_calls).order_by(
            rated_calls.c.ended_at_us.desc(), rated_calls.c.id.desc()
        )
        if account_id is not None:
            query = query.where(rated_calls.c.account_id == account_id)
        with wrap_driver_errors("listing rated calls"):
            async with self._engine.connect() as conn:
                rows = await conn.execute(query.limit(limit).offset(offset))
                return [_record(row) for row in rows]

    async def count(self, account_id: str | None = None) -> int:
        """How many rated calls there are (of one account, or in all)."""
        query = select(func.count()).select_from(rated_calls)
        if account_id is not None:
            query = query.where(rated_calls.c.account_id == account_id)
        with wrap_driver_errors("counting rated calls"):
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def get(self, switch_id: str, call_id: str) -> RatedCallRecord | None:
        """One rated call by its switch and call id, or None."""
        query = select(rated_calls).where(
            rated_calls.c.switch_id == switch_id, rated_calls.c.call_id == call_id
        )
        with wrap_driver_errors("reading a rated call"):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return None if row is None else _record(row)
