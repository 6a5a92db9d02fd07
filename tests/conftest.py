"""Shared fixtures: real Redis and real SQL databases (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import services

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _fixtures_dir() -> Path:
    """The recorded switch streams (``../shared/fixtures`` beside the checkout)."""
    for candidate in (FIXTURES, Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures"):
        if candidate.is_dir():
            return candidate.resolve()
    raise RuntimeError(f"switch fixtures not found at {FIXTURES}")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Path of ``shared/fixtures`` (asterisk/ and freeswitch/ streams)."""
    return _fixtures_dir()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis server for this test session."""
    yield from services.redis_url_for_session(tmp_path_factory.mktemp("redis"))


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An async redis-py client; tests use unique ids and never flush the server."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=services.sql_backends())
async def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of an empty SQL database: SQLite, and PostgreSQL when configured."""
    if request.param == "sqlite":
        yield services.sqlite_url(tmp_path)
    else:
        async for url in services.fresh_postgres_database():
            yield url


@pytest.fixture
async def sql_engine(sql_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database with every table created."""
    from storage.engine import make_engine
    from storage.tables import metadata

    engine = make_engine(sql_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a CLI command's logging set-up did (its stream is closed afterwards)."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a SQL database with ``sql``."""
    for item in items:
        if "sql_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sql)
