"""The platform's policy for real-time caps: trials, suspension, postpaid limits.

An account's own limits live in its Redis hash (``balance.live``), written from SQL by
:func:`account_limits`: while an account is in trial, its concurrency and seat caps are
the trial's (the lower of the two when it has its own), and its trial window closes in
Redis at ``trial_ends_at`` (``TRIAL_EXPIRED``). Converting it to a paid plan (no
``trial_ends_at``) and loading it again lifts the trial caps at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from balance.accounts import Account
from balance.live import AccountLimits


@dataclass(frozen=True, slots=True)
class TrialPolicy:
    """The caps of every account in trial (None: no cap of that kind)."""

    concurrency_limit: int | None = 2
    seat_limit: int | None = 2
    denied_prefixes: tuple[str, ...] = ("00", "011", "+")  # international dialling


@dataclass(frozen=True, slots=True)
class CapsPolicy:
    """How suspensions and postpaid limits act on live calls."""

    trial: TrialPolicy = field(default_factory=TrialPolicy)
    suspended_live_calls: Literal["cut", "keep"] = "cut"
    postpaid_auto_suspend: bool = True


def _lowest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def in_trial(account: Account) -> bool:
    """Whether the account is (or was, until converted) on a trial."""
    return account.trial_ends_at is not None


def trial_expired(account: Account, now: datetime | None = None) -> bool:
    """Whether the account's trial window is over."""
    ends = account.trial_ends_at
    return ends is not None and (now or datetime.now(UTC)) >= ends


def concurrency_limit(account: Account, policy: CapsPolicy) -> int | None:
    """The account's concurrency cap in force (the burst limit of a package)."""
    if in_trial(account):
        return _lowest(account.concurrency_limit, policy.trial.concurrency_limit)
    return account.concurrency_limit


def seat_limit(account: Account, policy: CapsPolicy) -> int | None:
    """The account's seat cap in force."""
    if in_trial(account):
        return _lowest(account.seat_limit, policy.trial.seat_limit)
    return account.seat_limit


def trial_denies(account: Account, callee: str, policy: CapsPolicy) -> bool:
    """Whether a trial account may not call ``callee`` (an international prefix)."""
    return in_trial(account) and callee.startswith(policy.trial.denied_prefixes)


def account_limits(account: Account, balance_micros: int, policy: CapsPolicy) -> AccountLimits:
    """The account's hot state for Redis, with the policy's trial caps applied."""
    ends = account.trial_ends_at
    return AccountLimits(
        account_id=account.id,
        status=account.status,
        balance_micros=balance_micros,
        credit_limit_micros=account.credit_limit_micros,
        concurrency_limit=concurrency_limit(account, policy),
        trial_ends_ms=None if ends is None else int(ends.timestamp() * 1000),
        cps_limit=account.cps_limit,
        seat_limit=seat_limit(account, policy),
        suspend_cut=policy.suspended_live_calls == "cut",
    )
