"""Operator actions on an account's caps and status, written to SQL and Redis at once.

One place for the CLI (and the management API) to change what the real-time checks
read: caps, suspension, trials. Every change is written to SQL (the truth), then the
account's hot state is loaded into Redis from it, so the next authorization and the
next debit tick see it; the daemon's cached copy of the account follows within
``caps.accounts_refresh_interval`` (``AccountDirectory.refresh``).

Postpaid accounts: :meth:`AccountAdmin.check_postpaid` suspends an account that has
reached its credit limit (``status_reason`` ``credit_limit``), and
:meth:`AccountAdmin.after_payment` resumes it once a payment brings it back under.
An operator's suspension (``status_reason`` ``operator``) is never lifted by a payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import Account, AccountStore, UnknownAccount
from balance.ledger import Ledger, TopupResult
from balance.live import LiveState
from daemon.caps_policy import CapsPolicy, account_limits

log = structlog.get_logger(__name__)

CAP_FIELDS = (
    "concurrency_limit",
    "concurrency_package",
    "overage_rate_micros",
    "cps_limit",
    "seat_limit",
    "customers_concurrency_limit",
    "customers_cps_limit",
    "low_balance",
)
"""The account fields ``set_caps`` changes (None: no cap; ``low_balance``: JSON thresholds,
'' for the configured defaults)."""

CREDIT_LIMIT_REASON = "credit_limit"
OPERATOR_REASON = "operator"


@dataclass(frozen=True, slots=True)
class TrialStarted:
    """A trial: its end, the trial credit's top-up (None without credit)."""

    account: Account
    ends_at: datetime
    topup: TopupResult | None


class AccountAdmin:
    """Changes caps, status and trials of accounts; SQL first, then Redis."""

    def __init__(self, engine: AsyncEngine, live: LiveState, policy: CapsPolicy) -> None:
        self._store = AccountStore(engine)
        self._ledger = Ledger(engine)
        self._live = live
        self.policy = policy  # replaced on a configuration reload

    async def sync(self, account: Account) -> None:
        """Load the account's hot state into Redis from SQL (balance from the ledger)."""
        balance = await self._ledger.balance_micros(account.id)
        await self._live.load_account(account_limits(account, balance, self.policy))

    async def set_caps(self, account_id: str, **caps: Any) -> Account:
        """Change some of :data:`CAP_FIELDS` (validated by the account store)."""
        unknown = sorted(set(caps) - set(CAP_FIELDS))
        if unknown:
            raise ValueError(f"not a cap: {unknown[0]!r} (caps: {', '.join(CAP_FIELDS)})")
        account = await self._store.update(account_id, **caps)
        await self.sync(account)
        log.info("account caps changed", account_id=account_id, caps=sorted(caps))
        return account

    async def suspend(self, account_id: str, reason: str = OPERATOR_REASON) -> Account:
        """Suspend: new calls are denied ACCOUNT_SUSPENDED, live ones cut per policy."""
        account = await self._store.update(account_id, status="suspended", status_reason=reason)
        await self.sync(account)
        log.info("account suspended", account_id=account_id, reason=reason)
        return account

    async def resume(self, account_id: str) -> Account:
        """Make a suspended account active again."""
        account = await self._store.update(account_id, status="active", status_reason="")
        await self.sync(account)
        log.info("account resumed", account_id=account_id)
        return account

    async def start_trial(
        self,
        account_id: str,
        days: int,
        credit: Decimal = Decimal(0),
        *,
        now: datetime | None = None,
    ) -> TrialStarted:
        """Put the account in trial for ``days`` with ``credit`` (given once per account)."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
            raise ValueError(f"days: 1-366, got {days!r}")
        ends = (now or datetime.now(UTC)) + timedelta(days=days)
        account = await self._store.update(account_id, trial_ends_at=ends)
        topup = None
        if credit > 0:
            topup = await self._ledger.topup(
                account_id, credit, f"trial-credit:{account_id}", "trial credit"
            )
        await self.sync(account)
        log.info("trial started", account_id=account_id, ends_at=ends.isoformat())
        return TrialStarted(account, ends, topup)

    async def convert(self, account_id: str) -> Account:
        """End the trial: a paid account, its trial caps lifted at once."""
        account = await self._store.update(account_id, trial_ends_at=None)
        await self.sync(account)
        log.info("trial converted", account_id=account_id)
        return account

    async def check_postpaid(self, account_id: str) -> Account | None:
        """Suspend a postpaid account that reached its credit limit; the account if so."""
        if not self.policy.postpaid_auto_suspend:
            return None
        account = await self._store.get(account_id)
        if account is None or account.billing != "postpaid" or account.status != "active":
            return None
        balance = await self._ledger.balance_micros(account_id)
        if balance + account.credit_limit_micros > 0:
            return None
        return await self.suspend(account_id, CREDIT_LIMIT_REASON)

    async def after_payment(self, account_id: str) -> Account | None:
        """Resume an account suspended at its credit limit once it is under it again."""
        account = await self._store.get(account_id)
        if account is None:
            raise UnknownAccount(account_id)
        if account.status != "suspended" or account.status_reason != CREDIT_LIMIT_REASON:
            return None
        balance = await self._ledger.balance_micros(account_id)
        if balance + account.credit_limit_micros <= 0:
            return None
        return await self.resume(account_id)
