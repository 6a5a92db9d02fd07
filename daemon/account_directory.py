"""A read-through cache of accounts for the authorization hot path.

Authorization must not query SQL per call: accounts are loaded at start and refreshed
on reload; an account id not in the cache (created by the CLI or the API after start)
is loaded once from SQL, and a negative answer is remembered for a short while.
"""

from __future__ import annotations

import time

from balance.accounts import Account, AccountStore


class AccountDirectory:
    """Accounts by id, cached, with one SQL read per unknown id per ``miss_ttl`` seconds."""

    def __init__(self, store: AccountStore, *, miss_ttl: float = 5.0) -> None:
        self._store = store
        self._accounts: dict[str, Account] = {}
        self._misses: dict[str, float] = {}
        self._miss_ttl = miss_ttl

    async def load(self) -> list[Account]:
        """(Re)load every account from SQL."""
        accounts = await self._store.list()
        self._accounts = {account.id: account for account in accounts}
        self._misses.clear()
        return accounts

    def put(self, account: Account) -> None:
        """Record a changed account (after an update through this process)."""
        self._accounts[account.id] = account
        self._misses.pop(account.id, None)

    async def get(self, account_id: str) -> Account | None:
        """The account, from the cache or SQL; None when it does not exist."""
        account = self._accounts.get(account_id)
        if account is not None:
            return account
        missed_at = self._misses.get(account_id)
        now = time.monotonic()
        if missed_at is not None and now - missed_at < self._miss_ttl:
            return None
        account = await self._store.get(account_id)
        if account is None:
            self._misses[account_id] = now
            return None
        self._accounts[account_id] = account
        return account
