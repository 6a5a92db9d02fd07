"""CLI commands for accounts, top-ups and calls (``ratekeeper accounts|topup|calls``)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import typer

from balance.accounts import Account, AccountError, AccountStore
from balance.ledger import Ledger, LedgerError
from balance.live import LiveState
from balance.rated_calls import RatedCallWriter
from daemon.account_admin import AccountAdmin
from daemon.app import open_resources
from daemon.cli_support import emit, fail, run_async, state
from tariffs.money import MoneyError, format_money, from_micros, parse_amount, to_micros

accounts_app = typer.Typer(help="Create, show and list accounts.", no_args_is_help=True)
calls_app = typer.Typer(help="Live calls and rated calls.", no_args_is_help=True)


def _account_row(account: Account, balance_micros: int | None = None) -> dict[str, Any]:
    row = {
        "id": account.id,
        "name": account.name,
        "parent": account.parent_id or "",
        "currency": account.currency,
        "billing": account.billing,
        "credit_limit": str(from_micros(account.credit_limit_micros)),
        "status": account.status,
        "concurrency_limit": account.concurrency_limit,
        "rate_deck": account.rate_deck or "",
        "timezone": account.timezone,
    }
    if balance_micros is not None:
        row["balance"] = str(from_micros(balance_micros))
    return row


@accounts_app.command("create")
def accounts_create(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account id = the switch accountcode."),
    name: str = typer.Option("", help="Display name."),
    parent: str | None = typer.Option(None, help="The reseller (parent account) id."),
    currency: str = typer.Option("USD"),
    billing: str = typer.Option("prepaid", help="prepaid or postpaid."),
    credit_limit: str = typer.Option("0", help="Credit allowed below zero (postpaid)."),
    concurrency_limit: int | None = typer.Option(None, help="Max concurrent calls."),
    rate_deck: str | None = typer.Option(None, "--deck", help="The retail rate deck."),
    timezone: str = typer.Option(
        "UTC", help="IANA time zone the deck's time bands are read in (e.g. Europe/Paris)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create an account."""
    settings = state(ctx).settings()
    try:
        limit = to_micros(parse_amount(credit_limit, allow_negative=False))
    except MoneyError as exc:
        raise fail(f"--credit-limit: {exc}") from exc
    account = Account(
        id=account_id,
        name=name,
        parent_id=parent,
        currency=currency,
        billing=billing,
        credit_limit_micros=limit,
        concurrency_limit=concurrency_limit,
        rate_deck=rate_deck,
        timezone=timezone,
    )

    async def create() -> Account:
        res = await open_resources(settings)
        try:
            created = await AccountStore(res.engine).create(account)
            await _sync_live(res, created)
            return created
        finally:
            await res.close()

    try:
        created = run_async(create)
    except AccountError as exc:
        raise fail(str(exc)) from exc
    emit(
        [_account_row(created, 0)], list(_account_row(created, 0)), as_json=as_json, title="account"
    )


async def _sync_live(res: Any, account: Account) -> None:
    """Write the account's hot state to Redis: a change takes effect at once."""
    from daemon.caps_policy import account_limits

    balance = await Ledger(res.engine).balance_micros(account.id)
    policy = res.settings.caps.policy()
    await LiveState(res.redis, batch=False).load_account(account_limits(account, balance, policy))


@accounts_app.command("show")
def accounts_show(
    ctx: typer.Context,
    account_id: str,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one account with its balance (SQL) and live reservations (Redis)."""
    settings = state(ctx).settings()

    async def show() -> dict[str, Any] | None:
        res = await open_resources(settings)
        try:
            account = await AccountStore(res.engine).get(account_id)
            if account is None:
                return None
            row = _account_row(account, await Ledger(res.engine).balance_micros(account_id))
            snap = await LiveState(res.redis, batch=False).snapshot(account_id)
            row["reserved"] = str(from_micros(snap.reserved_micros if snap else 0))
            row["live_calls"] = len(snap.calls) if snap else 0
            return row
        finally:
            await res.close()

    row = run_async(show)
    if row is None:
        raise fail(f"unknown account: {account_id!r}")
    emit([row], list(row), as_json=as_json, title=f"account {account_id}")


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context,
    parent: str | None = typer.Option(None, help="Only the customers of this reseller."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List accounts with their balances."""
    settings = state(ctx).settings()

    async def listing() -> list[dict[str, Any]]:
        res = await open_resources(settings)
        try:
            balances = await Ledger(res.engine).balances()
            accounts = await AccountStore(res.engine).list(parent_id=parent)
            return [_account_row(a, balances.get(a.id, 0)) for a in accounts]
        finally:
            await res.close()

    rows = run_async(listing)
    columns = ["id", "name", "parent", "billing", "status", "balance", "currency", "rate_deck"]
    emit(rows, columns, as_json=as_json, title="accounts")


def topup(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="The account to credit."),
    amount: str = typer.Argument(..., help="Amount in the account's currency, e.g. 25.00"),
    idempotency_key: str = typer.Option(..., help="A repeated key applies once."),
    description: str = typer.Option(""),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Top up a prepaid balance (idempotent by key)."""
    settings = state(ctx).settings()
    try:
        value = parse_amount(amount, allow_negative=False)
    except MoneyError as exc:
        raise fail(f"AMOUNT: {exc}") from exc

    async def apply() -> dict[str, Any]:
        res = await open_resources(settings)
        try:
            ledger = Ledger(res.engine)
            result = await ledger.topup(account_id, value, idempotency_key, description)
            live = LiveState(res.redis, batch=False)
            await live.credit(account_id, result.amount_micros, idempotency_key)
            # a postpaid account suspended at its credit limit is resumed by the payment
            await AccountAdmin(res.engine, live, settings.caps.policy()).after_payment(account_id)
            row = {k: str(v) for k, v in dataclasses.asdict(result).items()}
            row["amount"] = str(from_micros(result.amount_micros))
            row["balance"] = format_money(await ledger.balance_micros(account_id))
            return row
        finally:
            await res.close()

    try:
        row = run_async(apply)
    except (LedgerError, AccountError) as exc:
        raise fail(str(exc)) from exc
    emit(
        [row],
        ["account_id", "amount", "idempotency_key", "replayed", "balance"],
        as_json=as_json,
        title="top-up",
    )


@calls_app.command("live")
def calls_live(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Live calls: the reservations held in Redis, per account."""
    settings = state(ctx).settings()

    async def live_calls() -> list[dict[str, Any]]:
        res = await open_resources(settings)
        try:
            live = LiveState(res.redis, batch=False)
            rows = []
            for account in await AccountStore(res.engine).list():
                snap = await live.snapshot(account.id)
                if snap is None:
                    continue
                for call_key, reserved in sorted(snap.calls.items()):
                    rows.append(
                        {
                            "account": account.id,
                            "call": call_key,
                            "reserved": str(from_micros(reserved)),
                        }
                    )
            return rows
        finally:
            await res.close()

    emit(
        run_async(live_calls), ["account", "call", "reserved"], as_json=as_json, title="live calls"
    )


@calls_app.command("list")
def calls_list(
    ctx: typer.Context,
    account: str | None = typer.Option(None),
    limit: int = typer.Option(50),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rated calls, newest first."""
    settings = state(ctx).settings()

    async def listing() -> list[dict[str, Any]]:
        res = await open_resources(settings)
        try:
            records = await RatedCallWriter(res.engine).list(account_id=account, limit=limit)
        finally:
            await res.close()
        return [
            {
                "switch": r.switch_id,
                "call_id": r.call_id,
                "account": r.account_id,
                "caller": r.caller,
                "callee": r.callee,
                "disposition": r.disposition,
                "billsec": str(Decimal(r.billsec_us) / 1_000_000),
                "billable": r.billable_seconds,
                "cost": str(from_micros(r.cost_micros)),
                "currency": r.currency,
            }
            for r in records
        ]

    columns = [
        "call_id",
        "account",
        "callee",
        "disposition",
        "billsec",
        "billable",
        "cost",
        "currency",
    ]
    emit(run_async(listing), columns, as_json=as_json, title="rated calls")
