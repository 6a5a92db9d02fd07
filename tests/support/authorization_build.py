"""The real ``AuthorizationService`` for tests, built the way the daemon builds it.

Accounts and their top-ups go to SQL, the deck of ``daemon_harness`` too; the live state
is rebuilt from the ledger and the catalog loaded from SQL, as at the daemon's start.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from balance.live import LiveState
from daemon.account_directory import AccountDirectory
from daemon.app import load_catalog, rebuild_live_state
from daemon.authorization_service import AuthorizationPolicy, AuthorizationService
from storage.decks import DeckStore
from tests.support.daemon_harness import DECK, RATES


async def build_service(
    sql_engine: AsyncEngine,
    live: LiveState,
    balances: dict[str, Decimal],
    *,
    debit_interval: int,
    max_call_duration: int = 3600,
) -> AuthorizationService:
    """A service over ``live`` whose accounts (``balances``: id -> initial top-up, 0 for
    none) are priced by the ``retail`` deck (0.60/min, 1 s increments)."""
    await DeckStore(sql_engine).replace(DECK, list(RATES))
    store, ledger = AccountStore(sql_engine), Ledger(sql_engine)
    for account, balance in balances.items():
        await store.create(Account(id=account, rate_deck=DECK.name))
        if balance:
            await ledger.topup(account, balance, f"initial-{account}")
    await rebuild_live_state(await store.list(), ledger, live)
    directory = AccountDirectory(store)
    await directory.load()
    return AuthorizationService(
        directory,
        await load_catalog(DeckStore(sql_engine)),
        live,
        AuthorizationPolicy(debit_interval=debit_interval, max_call_duration=max_call_duration),
    )
