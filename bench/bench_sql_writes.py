"""Rated calls written per second (with their ledger entries): PostgreSQL and SQLite.

Baseline, same run: asyncpg ``copy_records_to_table`` of the same rows into a bare
table (no indexes, no constraints, no ledger); the ratio is writer rate / COPY rate.

    python bench/bench_sql_writes.py [--quick]

PostgreSQL: env ``RATEKEEPER_BENCH_POSTGRES_URL`` (default
postgresql://postgres@127.0.0.1:5432/test); a fresh temporary database is created and
dropped afterwards. SQLite: a file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg

from balance.rated_calls import FIELDS, RatedCallRecord, RatedCallWriter
from storage.engine import make_engine
from storage.tables import metadata

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _calls(tag: str, count: int) -> list[RatedCallRecord]:
    start = 1_700_000_000_000_000
    return [
        RatedCallRecord(
            "pbx-1", f"{tag}-{n}", f"acc-{n % 50}", "1001", "442071234567",
            start + n, start + n + 2_000_000, start + n + 62_000_000, 60_000_000, 60,
            1_500 + n % 7, "USD", "retail", "44", "United Kingdom", 1_500, "ANSWERED", "16",
        )
        for n in range(count)
    ]  # fmt: skip


def _pg_dsn(url: str, database: str | None = None) -> str:
    rest = url.partition("://")[2]
    if database is not None:
        rest = rest.rpartition("/")[0] + "/" + database
    return "postgresql://" + rest


@asynccontextmanager
async def temporary_pg_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (its DSN), dropped on exit."""
    name = f"rk_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(_pg_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield _pg_dsn(admin_url, name)
    finally:
        conn = await asyncpg.connect(_pg_dsn(admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def copy_baseline(dsn: str, calls: list[RatedCallRecord]) -> float:
    """Rows/s of COPY of the same rows into a bare table."""
    conn = await asyncpg.connect(dsn)
    try:
        # the same columns as rated_calls, in FIELDS order (ints as int8, the rest text)
        ints = {f for f in FIELDS for c in calls[:100] if isinstance(getattr(c, f), int)}
        columns = ", ".join(f"{f} {'int8' if f in ints else 'text'}" for f in FIELDS)
        await conn.execute(f"CREATE TABLE bare_calls ({columns}, rated_at timestamptz)")
        now = datetime.now(UTC)
        records = [(*(getattr(c, f) for f in FIELDS), now) for c in calls]
        began = time.perf_counter()
        await conn.copy_records_to_table("bare_calls", records=records)
        return len(records) / (time.perf_counter() - began)
    finally:
        await conn.close()


async def writer_rate(
    url: str, calls: list[RatedCallRecord], batch: int, concurrency: int = 1
) -> float:
    """Rated calls/s through ``RatedCallWriter.write`` in batches of ``batch``, with
    ``concurrency`` batches in flight at once (the daemon's ``write_concurrency``)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        writer = RatedCallWriter(engine)
        await writer.write(_calls(f"warm-{uuid.uuid4().hex}", min(batch, 50)))
        batches = [calls[offset : offset + batch] for offset in range(0, len(calls), batch)]

        async def write_every(nth: int) -> None:
            for one in batches[nth::concurrency]:
                await writer.write(one)

        began = time.perf_counter()
        await asyncio.gather(*(write_every(nth) for nth in range(concurrency)))
        return len(calls) / (time.perf_counter() - began)
    finally:
        await engine.dispose()


async def main(quick: bool) -> None:
    sizes = {1: 100, 100: 2_000, 1000: 5_000} if quick else {1: 1_000, 100: 20_000, 1000: 60_000}
    admin = os.environ.get("RATEKEEPER_BENCH_POSTGRES_URL", DEFAULT_PG)
    big = max(sizes)
    rows: list[tuple[str, int, int, int, float]] = []
    async with temporary_pg_database(admin) as dsn:
        baseline = await copy_baseline(dsn, _calls("copy", max(sizes.values())))
        # the daemon's PostgreSQL default ([database] write_concurrency = 2) last
        for batch, count, writers in [*((b, c, 1) for b, c in sizes.items()), (big, sizes[big], 2)]:
            calls = _calls(f"pg-{batch}-{writers}-{uuid.uuid4().hex[:6]}", count)
            rate = await writer_rate(dsn, calls, batch, writers)
            rows.append(("postgresql", batch, writers, count, rate))
    with tempfile.TemporaryDirectory() as tmp:
        for batch, count in sizes.items():  # SQLite has one writer at a time
            calls = _calls(f"lite-{batch}", count)
            url = f"sqlite+aiosqlite:///{tmp}/bench-{batch}.db"
            rows.append(("sqlite", batch, 1, count, await writer_rate(url, calls, batch)))
    print(f"baseline: asyncpg COPY into a bare table: {baseline:,.0f} rows/s")
    header = f"{'backend':<11} {'batch':>6} {'writers':>7} {'calls':>7} {'calls/s':>10}"
    print(f"{header} {'vs COPY':>8}")
    for backend, batch, writers, count, rate in rows:
        line = f"{backend:<11} {batch:>6} {writers:>7} {count:>7} {rate:>10,.0f}"
        print(f"{line} {rate / baseline:>8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    asyncio.run(main(parser.parse_args().quick))
