"""Alembic migrations versus ``storage.tables.metadata``, and the engine factory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

import storage.tables
from storage.engine import UnsupportedDatabase, async_url, make_engine, sqlite_url_for
from storage.migrate import current, current_async, head, upgrade, upgrade_async
from storage.tables import metadata


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_given_empty_database_when_upgraded_then_schema_matches_metadata(
    sql_url: str,
) -> None:
    assert await asyncio.to_thread(current, sql_url) is None
    await asyncio.to_thread(upgrade, sql_url)
    engine = make_engine(sql_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
        assert {t.name for t in metadata.sorted_tables} <= tables
        assert await current_async(engine) == head()
    finally:
        await engine.dispose()


async def test_given_upgraded_database_when_upgraded_again_then_nothing_changes(
    sql_url: str,
) -> None:
    engine = make_engine(sql_url)
    try:
        await upgrade_async(engine)
        await upgrade_async(engine)
        await asyncio.to_thread(upgrade, sql_url)
        assert await current_async(engine) == head() == _newest_revision_file()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            versions = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar()
        assert versions == 1
    finally:
        await engine.dispose()


def _newest_revision_file() -> str:
    """The revision id of the highest-numbered file in migrations/versions (NNNN_*.py)."""
    versions = Path(storage.tables.__file__).parent / "migrations" / "versions"
    return max(p.name[:4] for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))


def test_given_plain_urls_when_rewritten_then_async_drivers_are_used() -> None:
    assert async_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("sqlite:////tmp/x.db").drivername == "sqlite+aiosqlite"
    assert async_url("sqlite+aiosqlite:////tmp/x.db").drivername == "sqlite+aiosqlite"


def test_given_unsupported_url_when_rewritten_then_error_names_it_without_password() -> None:
    with pytest.raises(UnsupportedDatabase, match="mysql") as caught:
        async_url("mysql://user:secret@h/db")
    assert "secret" not in str(caught.value)


async def test_given_sqlite_state_dir_when_engine_made_then_wal_and_foreign_keys_are_on(
    tmp_path: Path,
) -> None:
    url = sqlite_url_for(tmp_path / "state" / "nested")
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
        assert (mode, fks) == ("wal", 1)
        assert busy is not None and busy >= 1000
        assert (tmp_path / "state" / "nested" / "ratekeeper.db").exists()
    finally:
        await engine.dispose()
