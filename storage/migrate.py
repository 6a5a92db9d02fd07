"""Schema migrations, run programmatically with Alembic (no alembic.ini needed).

``upgrade(url)`` / ``current(url)`` are for synchronous callers (the CLI:
``ratekeeper db upgrade``); they run their own event loop. Inside a running loop use
``upgrade_async(engine)`` / ``current_async(engine)``. Both drivers work (asyncpg,
aiosqlite): the Alembic environment runs on an async engine through ``run_sync``.
Failures are raised as ``storage.engine.StorageError`` chained to the driver error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import make_engine, wrap_driver_errors

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (URL in attributes)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def head() -> str:
    """The newest revision of the packaged migrations."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return revision


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (a no-op when already there)."""
    asyncio.run(_upgrade_url(url, revision))


def current(url: str) -> str | None:
    """The database's current revision, or None for an unmigrated database."""
    return asyncio.run(_current_url(url))


async def upgrade_async(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade through an existing async engine (for callers inside an event loop)."""
    config = alembic_config()

    def _upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    with wrap_driver_errors("database upgrade"):
        before = await current_async(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
        after = await current_async(engine)
    if before != after:
        log.info("database upgraded", from_revision=before, to_revision=after)


async def current_async(engine: AsyncEngine) -> str | None:
    """The current revision through an existing async engine."""

    def _current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    with wrap_driver_errors("reading the database revision"):
        async with engine.connect() as conn:
            return await conn.run_sync(_current)


async def _upgrade_url(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade_async(engine, revision)
    finally:
        await engine.dispose()


async def _current_url(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return await current_async(engine)
    finally:
        await engine.dispose()
