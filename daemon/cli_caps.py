"""CLI commands for an account's caps, status and trial (``ratekeeper accounts ...``).

``caps`` sets the real-time caps, ``suspend`` / ``resume`` the status, ``trial`` /
``convert`` the trial. Each writes SQL and the account's hot state in Redis
(``daemon.account_admin``): authorizations see the change at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import typer

from balance.accounts import Account, AccountError
from balance.ledger import LedgerError
from balance.live import LiveState, LiveStateError
from daemon.account_admin import AccountAdmin
from daemon.app import open_resources
from daemon.cli_accounts import accounts_app
from daemon.cli_support import emit, fail, run_async, state
from daemon.threshold_alerts import parse_rules
from tariffs.money import MoneyError, from_micros, parse_amount, to_micros

T = TypeVar("T")

NONE = "none"
CAP_ROWS = [
    "id",
    "status",
    "status_reason",
    "concurrency_limit",
    "concurrency_package",
    "overage_rate",
    "cps_limit",
    "seat_limit",
    "customers_concurrency_limit",
    "customers_cps_limit",
    "trial_ends_at",
    "low_balance",
]


def caps_row(account: Account) -> dict[str, Any]:
    """The caps and status columns of an account."""
    overage = account.overage_rate_micros
    return {
        "id": account.id,
        "status": account.status,
        "status_reason": account.status_reason,
        "concurrency_limit": account.concurrency_limit,
        "concurrency_package": account.concurrency_package,
        "overage_rate": None if overage is None else str(from_micros(overage)),
        "cps_limit": account.cps_limit,
        "seat_limit": account.seat_limit,
        "customers_concurrency_limit": account.customers_concurrency_limit,
        "customers_cps_limit": account.customers_cps_limit,
        "trial_ends_at": account.trial_ends_at.isoformat() if account.trial_ends_at else None,
        "low_balance": account.low_balance,
    }


def _with_admin(ctx: typer.Context, action: Callable[[AccountAdmin], Awaitable[T]]) -> T:
    settings = state(ctx).settings()

    async def run() -> T:
        res = await open_resources(settings)
        try:
            admin = AccountAdmin(
                res.engine, LiveState(res.redis, batch=False), settings.caps.policy()
            )
            return await action(admin)
        finally:
            await res.close()

    try:
        return run_async(run)
    except (AccountError, LedgerError, LiveStateError, ValueError) as exc:
        raise fail(str(exc)) from exc


def _count(option: str, value: str | None) -> tuple[bool, int | None]:
    """(given, value) of a cap option: a count >= 0, or 'none' to lift the cap."""
    if value is None:
        return False, None
    if value.lower() == NONE:
        return True, None
    if not value.isdigit():
        raise fail(f"{option}: a whole number >= 0 or 'none', got {value!r}")
    return True, int(value)


@accounts_app.command("caps")
def accounts_caps(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account."),
    concurrency_limit: str | None = typer.Option(
        None, help="Max live calls (the burst limit of a package); 'none' lifts it."
    ),
    package: str | None = typer.Option(
        None, help="Concurrent calls included in the plan; above it is overage."
    ),
    overage_rate: str | None = typer.Option(
        None, help="Price per channel-minute above the package, e.g. 0.01; 'none'."
    ),
    cps_limit: str | None = typer.Option(None, help="Calls admitted per second."),
    seat_limit: str | None = typer.Option(None, help="Live agent seats."),
    customers_concurrency_limit: str | None = typer.Option(
        None, help="A reseller: live calls of all its customers together."
    ),
    customers_cps_limit: str | None = typer.Option(
        None, help="A reseller: calls per second of all its customers together."
    ),
    low_balance: str | None = typer.Option(
        None,
        help='Low-balance alerts, JSON: \'[{"amount": "5.00"}, {"minutes": 10}]\'; '
        "'none' for the configured defaults.",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Set an account's real-time caps (only the options given change)."""
    changes: dict[str, Any] = {}
    for field, option, value in (
        ("concurrency_limit", "--concurrency-limit", concurrency_limit),
        ("concurrency_package", "--package", package),
        ("cps_limit", "--cps-limit", cps_limit),
        ("seat_limit", "--seat-limit", seat_limit),
        (
            "customers_concurrency_limit",
            "--customers-concurrency-limit",
            customers_concurrency_limit,
        ),
        ("customers_cps_limit", "--customers-cps-limit", customers_cps_limit),
    ):
        given, count = _count(option, value)
        if given:
            changes[field] = count
    if overage_rate is not None:
        if overage_rate.lower() == NONE:
            changes["overage_rate_micros"] = None
        else:
            try:
                rate = parse_amount(overage_rate, allow_negative=False)
            except MoneyError as exc:
                raise fail(f"--overage-rate: {exc}") from exc
            changes["overage_rate_micros"] = to_micros(rate)
    if low_balance is not None:
        text = "" if low_balance.lower() == NONE else low_balance
        if text:
            try:
                parse_rules(text)
            except ValueError as exc:
                raise fail(f"--low-balance: {exc}") from exc
        changes["low_balance"] = text
    if not changes:
        raise fail("nothing to change: give at least one cap option (see --help)")
    account = _with_admin(ctx, lambda admin: admin.set_caps(account_id, **changes))
    emit([caps_row(account)], CAP_ROWS, as_json=as_json, title="caps")


@accounts_app.command("suspend")
def accounts_suspend(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account."),
    reason: str = typer.Option("operator", help="Why (kept as status_reason)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Suspend an account: new calls denied, live calls cut per caps.suspended_live_calls."""
    account = _with_admin(ctx, lambda admin: admin.suspend(account_id, reason))
    emit([caps_row(account)], CAP_ROWS, as_json=as_json, title="suspended")


@accounts_app.command("resume")
def accounts_resume(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Make a suspended account active again."""
    account = _with_admin(ctx, lambda admin: admin.resume(account_id))
    emit([caps_row(account)], CAP_ROWS, as_json=as_json, title="resumed")


@accounts_app.command("trial")
def accounts_trial(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account."),
    days: int | None = typer.Option(None, help="Trial length (default caps.trial.days)."),
    credit: str | None = typer.Option(None, help="Trial credit (default caps.trial.credit)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Start a free trial: trial caps until it ends, then calls are denied TRIAL_EXPIRED."""
    trial = state(ctx).settings().caps.trial
    try:
        amount = trial.credit if credit is None else parse_amount(credit, allow_negative=False)
    except MoneyError as exc:
        raise fail(f"--credit: {exc}") from exc
    length = trial.days if days is None else days
    started = _with_admin(ctx, lambda admin: admin.start_trial(account_id, length, Decimal(amount)))
    row = caps_row(started.account)
    row["trial_credit"] = str(amount)
    emit([row], [*CAP_ROWS, "trial_credit"], as_json=as_json, title="trial")


@accounts_app.command("convert")
def accounts_convert(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """End a trial: the account is paid, its trial caps lifted at once."""
    account = _with_admin(ctx, lambda admin: admin.convert(account_id))
    emit([caps_row(account)], CAP_ROWS, as_json=as_json, title="converted")
