"""Async SQLAlchemy engines for PostgreSQL (asyncpg) and SQLite (aiosqlite, WAL).

``make_engine`` is the one place that knows the drivers: it rewrites plain URLs to the
async drivers, and on SQLite turns on WAL, foreign keys and a busy timeout and begins
every transaction with ``BEGIN IMMEDIATE`` (a writer waits for the lock instead of
failing later on a read-to-write upgrade), so both backends behave alike under
concurrent writers.

Errors::

    StorageError            STORAGE_ERROR        base; driver errors are wrapped ``from exc``
    └── UnsupportedDatabase UNSUPPORTED_DATABASE the URL names a driver we do not support
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


class StorageError(Exception):
    """A database operation failed (driver errors are chained as ``__cause__``)."""

    code = "STORAGE_ERROR"


class UnsupportedDatabase(StorageError):
    """The database URL names a backend or driver ratekeeper does not support."""

    code = "UNSUPPORTED_DATABASE"


def async_url(url: str) -> URL:
    """The SQLAlchemy URL for ``url`` with the async driver of its backend."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name()
    if backend in ("postgresql", "postgres"):
        if driver not in ("asyncpg", "psycopg2", "postgresql") and "+" in parsed.drivername:
            raise UnsupportedDatabase(f"unsupported PostgreSQL driver {driver!r}: use asyncpg")
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        if "+" in parsed.drivername and driver not in ("aiosqlite", "pysqlite"):
            raise UnsupportedDatabase(f"unsupported SQLite driver {driver!r}: use aiosqlite")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise UnsupportedDatabase(
        f"unsupported database {parsed.drivername!r} in "
        f"{parsed.render_as_string(hide_password=True)}: use postgresql:// or sqlite:///"
    )


def sqlite_url_for(state_dir: Path) -> str:
    """The embedded default database: ``ratekeeper.db`` in the daemon's state directory."""
    return f"sqlite+aiosqlite:///{Path(state_dir).resolve() / 'ratekeeper.db'}"


def is_sqlite(engine: AsyncEngine) -> bool:
    """True when ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` (PostgreSQL or SQLite; plain URLs are rewritten)."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        return _sqlite_engine(target, echo=echo)
    return create_async_engine(
        target,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def _sqlite_engine(target: URL, *, echo: bool) -> AsyncEngine:
    database = target.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if memory:
        engine = create_async_engine(target, echo=echo, poolclass=StaticPool)
    else:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            target,
            echo=echo,
            pool_size=5,
            max_overflow=5,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transaction starts (pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def wrap_driver_errors(action: str) -> Iterator[None]:
    """Re-raise SQLAlchemy/driver errors as ``StorageError`` naming ``action``."""
    try:
        yield
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        raise StorageError(f"{action} failed: {detail.__class__.__name__}: {detail}") from exc


def insert_ignoring_conflicts(
    dialect_name: str, table: Table, conflict_columns: Sequence[str]
) -> Insert:
    """``INSERT ... ON CONFLICT (cols) DO NOTHING`` for PostgreSQL or SQLite."""
    if dialect_name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    if dialect_name == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    raise UnsupportedDatabase(f"unsupported SQL dialect {dialect_name!r}")
