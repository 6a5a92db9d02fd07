"""A read-through cache of accounts for the authorization hot path.

Authorization must not query SQL per call: accounts are loaded at start and refreshed
on reload; an account id not in the cache (created by the CLI or the API after start)
is loaded once from SQL, and a negative answer is remembered for a short while.
``refresh()`` reads only the accounts changed since the last read (the daemon calls it
every ``caps.accounts_refresh_interval``), so a change made by the CLI or the API
reaches pricing, trials and shared caps within that interval.
"""

from __future__ import annotations

import time
from datetime import datetime

from balance.accounts import Account, AccountStore


class AccountDirectory:
    """Accounts by id, cached, with one SQL read per unknown id per ``miss_ttl`` seconds."""

    def __init__(self, store: AccountStore, *, miss_ttl: float = 5.0) -> None:
        self._store = store
        self._accounts: dict[str, Account] = {}
        self._misses: dict[str, float] = {}
        self._miss_ttl = miss_ttl
        self._seen_until: datetime | None = None
        self.generation = 0  # bumped on every change: caches derived from accounts check it

    async def load(self) -> list[Account]:
        """(Re)load every account from SQL."""
        accounts = await self._store.list()
        self._accounts = {account.id: account for account in accounts}
        self._misses.clear()
        self._note(accounts)
        self.generation += 1
        return accounts

    async def refresh(self) -> list[Account]:
        """Read the accounts changed since the last read; the changed ones."""
        if self._seen_until is None:
            return await self.load()
        changed = await self._store.changed_since(self._seen_until)
        for account in changed:
            if self._accounts.get(account.id) != account:  # the newest is read again
                self.put(account)
        self._note(changed)
        return changed

    def _note(self, accounts: list[Account]) -> None:
        stamps = [a.updated_at for a in accounts if a.updated_at is not None]
        if stamps:  # ">=" on the next read: a change in the same microsecond is not missed
            newest = max(stamps)
            if self._seen_until is None or newest > self._seen_until:
                self._seen_until = newest

    def put(self, account: Account) -> None:
        """Record a changed account (after an update through this process)."""
        self._accounts[account.id] = account
        self._misses.pop(account.id, None)
        self.generation += 1

    def cached(self, account_id: str) -> Account | None:
        """The account if it is in the cache (no SQL)."""
        return self._accounts.get(account_id)

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
        self.generation += 1
        return account
