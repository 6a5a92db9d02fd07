"""Start the real daemon against real SQL and Redis, provisioned for a test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from balance.accounts import Account, AccountStore
from balance.keys import account_pattern
from balance.ledger import Ledger
from daemon.app import Daemon, open_resources
from daemon.demo import local_asterisk
from daemon.settings import (
    ApiSettings,
    AuthorizationSettings,
    DatabaseSettings,
    RedisSettings,
    Settings,
)
from storage.decks import DeckStore
from tariffs.deck import DeckInfo, Rate, Rounding

DECK = DeckInfo(name="retail", currency="USD", rounding=Rounding.UP, decimals=6)
# Every callee of the recorded streams starts with 1: one rate per second, 0.60/min.
RATES = (Rate("1", "North America", Decimal("0.60"), Decimal("0"), 1, 1, 0),)


def unique_switch_id() -> str:
    """A switch id of its own per test (reservation keys never collide across tests)."""
    return f"pbx-{uuid.uuid4().hex[:8]}"


def make_settings(
    tmp: Path,
    sql_url: str,
    redis_url: str,
    *,
    switch_id: str,
    ami_port: int,
    username: str = "billing",
    secret: str = "billing",
    debit_interval: int = 1,
) -> Settings:
    """Settings for a daemon on the test's SQL and Redis, with one Asterisk."""
    return Settings(
        state_dir=tmp,
        database=DatabaseSettings(url=sql_url, batch_delay_ms=5),
        redis=RedisSettings(url=redis_url),
        api=ApiSettings(port=0),
        authorization=AuthorizationSettings(
            http_port=0, fastagi_port=0, debit_interval=debit_interval, max_call_duration=3600
        ),
        switches=[
            local_asterisk(
                switch_id,
                ami_port,
                username,
                secret,
                ping_interval=30,
                reconnect_min=0.05,
                reconnect_max=0.2,
            )
        ],
    )


async def provision(
    settings: Settings, balances: dict[str, Decimal], **account_args: object
) -> None:
    """Create the accounts with their top-ups and the retail deck.

    An account new to the test's (fresh) database starts with no live state either: the
    recorded streams name fixed accounts (``tenant-a`` ...) on the one shared Redis, and
    what an earlier test left there (a call it never ended) must not carry over.
    """
    res = await open_resources(settings)
    try:
        await DeckStore(res.engine).replace(DECK, list(RATES))
        store, ledger = AccountStore(res.engine), Ledger(res.engine)
        for account_id, balance in balances.items():
            if await store.get(account_id) is None:
                found = [k async for k in res.redis.scan_iter(match=account_pattern(account_id))]
                if found:
                    await res.redis.delete(*found)
                await store.create(
                    Account(id=account_id, rate_deck=DECK.name, **account_args)  # type: ignore[arg-type]
                )
            if balance:
                await ledger.topup(account_id, balance, f"initial-{account_id}")
    finally:
        await res.close()


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    """A started daemon, stopped (drained) at the end."""
    daemon = Daemon(settings)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def eventually(predicate: Callable[[], object], *, within: float = 20.0) -> None:
    """Wait until an (async or sync) predicate holds; a hang guard, not a timing check."""

    async def check() -> bool:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        return bool(value)

    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls SQL and Redis, not an Event
            await asyncio.sleep(0.02)
