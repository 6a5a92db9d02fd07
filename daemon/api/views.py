"""Domain objects to API bodies: micro-units become 6-decimal strings, never floats."""

from __future__ import annotations

from balance.accounts import Account
from balance.ledger import PostingResult
from balance.live import AccountSnapshot
from daemon.api.schemas import AccountDetail, AccountOut, LiveCall, LiveOut, PostingOut
from tariffs.money import from_micros

API_FIELD_OF = {"credit_limit_micros": "credit_limit", "overage_rate_micros": "overage_rate"}
"""Account fields whose API name differs (for errors naming a field)."""


def money(micros: int) -> str:
    """Micro-units as the API's money string (``"25.500000"``)."""
    return str(from_micros(micros))


def account_out(account: Account, balance_micros: int) -> AccountOut:
    """The API view of an account with its SQL balance."""
    overage = account.overage_rate_micros
    return AccountOut(
        id=account.id,
        name=account.name,
        parent_id=account.parent_id,
        currency=account.currency,
        billing=account.billing,
        status=account.status,
        status_reason=account.status_reason,
        credit_limit=money(account.credit_limit_micros),
        balance=money(balance_micros),
        rate_deck=account.rate_deck,
        timezone=account.timezone,
        concurrency_limit=account.concurrency_limit,
        concurrency_package=account.concurrency_package,
        overage_rate=None if overage is None else money(overage),
        cps_limit=account.cps_limit,
        seat_limit=account.seat_limit,
        customers_concurrency_limit=account.customers_concurrency_limit,
        customers_cps_limit=account.customers_cps_limit,
        trial_ends_at=account.trial_ends_at,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


def live_out(snapshot: AccountSnapshot) -> LiveOut:
    """The API view of an account's hot state."""
    available = snapshot.balance_micros + snapshot.credit_limit_micros - snapshot.reserved_micros
    return LiveOut(
        status=snapshot.status,
        balance=money(snapshot.balance_micros),
        credit_limit=money(snapshot.credit_limit_micros),
        reserved=money(snapshot.reserved_micros),
        available=money(available),
        live_calls=len(snapshot.calls),
        calls=[
            LiveCall(call_key=key, reserved=money(micros))
            for key, micros in sorted(snapshot.calls.items())
        ],
    )


def account_detail(
    account: Account, balance_micros: int, snapshot: AccountSnapshot | None
) -> AccountDetail:
    """An account with its SQL balance and its live state."""
    base = account_out(account, balance_micros).model_dump()
    return AccountDetail(**base, live=None if snapshot is None else live_out(snapshot))


def posting_out(kind: str, result: PostingResult, client_key: str, currency: str) -> PostingOut:
    """The answer to a top-up or an adjustment (the same for a replay)."""
    return PostingOut(
        id=result.entry_id,
        kind="topup" if kind == "topup" else "adjustment",
        account_id=result.account_id,
        amount=money(result.amount_micros),
        currency=currency,
        idempotency_key=client_key,
        created_at=result.created_at,
    )
