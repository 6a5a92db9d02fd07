"""Alembic environment for ratekeeper: async engines (asyncpg, aiosqlite) via ``run_sync``.

Driven programmatically by ``storage.migrate`` (no alembic.ini): the database URL comes
in ``config.attributes["url"]``, or an already open sync ``Connection`` in
``config.attributes["connection"]`` (used by ``upgrade_async``).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from storage.engine import make_engine
from storage.tables import metadata

config = context.config


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = config.attributes.get("url")
    if not url:
        raise RuntimeError("storage.migrate passes the database URL in config.attributes['url']")
    asyncio.run(_run_on_url(url))


def _run_offline() -> None:
    context.configure(
        url=config.attributes.get("url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
