"""CLI commands for LCR: ``ratekeeper carriers add|list|remove`` and ``margin set|show|clear``.

The daemon reads carriers and margin guards at start (``RouteSelector.reload``): a change
made here applies to the calls authorized after the next reload or restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import typer

from daemon.app import open_resources
from daemon.cli_support import emit, err_console, fail, run_async, state
from daemon.settings import Settings
from storage.carriers import CarrierStore, CarrierStoreError, GuardScope, ScopedGuard
from storage.decks import DeckStore
from tariffs.lcr import Carrier, LcrError, MarginGuard
from tariffs.money import MoneyError, parse_amount

T = TypeVar("T")

carriers_app = typer.Typer(help="LCR carriers: buy decks and dial templates.", no_args_is_help=True)
margin_app = typer.Typer(help="Margin guards of accounts and resellers.", no_args_is_help=True)

CARRIER_COLUMNS = [
    "id",
    "name",
    "buy_deck",
    "dial_template",
    "priority",
    "weight",
    "enabled",
    "concurrency_limit",
    "cps_limit",
]
GUARD_COLUMNS = ["scope", "account", "min_margin", "min_margin_percent"]


def _with_store(settings: Settings, work: Callable[[CarrierStore, Any], Awaitable[T]]) -> T:
    """Run ``work(store, engine)`` against the configured database, then close it."""

    async def run() -> T:
        res = await open_resources(settings)
        try:
            return await work(CarrierStore(res.engine), res.engine)
        finally:
            await res.close()

    try:
        return run_async(run)
    except CarrierStoreError as exc:
        raise fail(str(exc)) from exc


def _carrier_row(carrier: Carrier) -> dict[str, Any]:
    return {
        "id": carrier.id,
        "name": carrier.name,
        "buy_deck": carrier.buy_deck,
        "dial_template": carrier.dial_template,
        "priority": carrier.priority,
        "weight": carrier.weight,
        "enabled": carrier.enabled,
        "concurrency_limit": carrier.concurrency_limit,
        "cps_limit": carrier.cps_limit,
    }


def _plain(value: Decimal) -> str:
    """A decimal without trailing zeros or exponent (``0.002000`` -> ``0.002``)."""
    return f"{value.normalize():f}"


def _guard_row(scoped: ScopedGuard) -> dict[str, Any]:
    return {
        "scope": str(scoped.scope),
        "account": scoped.account_id,
        "min_margin": _plain(scoped.guard.min_margin),
        "min_margin_percent": _plain(scoped.guard.min_margin_percent),
    }


@carriers_app.command("add")
def carriers_add(
    ctx: typer.Context,
    carrier_id: str = typer.Argument(..., metavar="ID", help="Carrier id ({carrier} in --dial)."),
    deck: str = typer.Option(..., "--deck", help="The carrier's buy rate deck."),
    dial: str = typer.Option(
        ..., "--dial", help="Dial template with {number} and {carrier}, e.g. PJSIP/{number}@ID."
    ),
    priority: int = typer.Option(0, help="Among equal costs, lower is tried first."),
    weight: int = typer.Option(0, min=0, help="Among equal costs and priorities, higher first."),
    name: str = typer.Option("", help="Display name."),
    disabled: bool = typer.Option(False, "--disabled", help="Add it disabled."),
    concurrency_limit: int | None = typer.Option(
        None, min=0, help="Trunk cap: live calls on this carrier."
    ),
    cps_limit: int | None = typer.Option(None, min=0, help="Trunk cap: calls per second."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a carrier with its buy deck, dial template and trunk caps."""
    settings = state(ctx).settings()
    try:
        carrier = Carrier(
            carrier_id,
            name,
            deck,
            dial,
            priority,
            weight,
            not disabled,
            concurrency_limit=concurrency_limit,
            cps_limit=cps_limit,
        )
    except LcrError as exc:
        raise fail(str(exc)) from exc

    async def add(store: CarrierStore, engine: Any) -> bool:
        await store.add(carrier)
        return deck in await DeckStore(engine).names()

    if not _with_store(settings, add):
        err_console.print(
            f"[yellow]warning:[/yellow] deck {deck!r} is not loaded yet: "
            f"carrier {carrier_id!r} offers no route until it is (ratekeeper rates import)"
        )
    emit([_carrier_row(carrier)], CARRIER_COLUMNS, as_json=as_json, title="carrier")


@carriers_app.command("list")
def carriers_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List carriers."""

    async def listing(store: CarrierStore, _engine: Any) -> list[Carrier]:
        return await store.list()

    rows = [_carrier_row(c) for c in _with_store(state(ctx).settings(), listing)]
    emit(rows, CARRIER_COLUMNS, as_json=as_json, title="carriers")


@carriers_app.command("remove")
def carriers_remove(
    ctx: typer.Context, carrier_id: str = typer.Argument(..., metavar="ID")
) -> None:
    """Remove a carrier (rated calls keep its id)."""

    async def remove(store: CarrierStore, _engine: Any) -> None:
        await store.remove(carrier_id)

    _with_store(state(ctx).settings(), remove)
    typer.echo(f"carrier {carrier_id!r} removed")


def _scope(account: str | None, reseller: str | None) -> tuple[GuardScope, str]:
    if (account is None) == (reseller is None):
        raise fail("give exactly one of --account or --reseller", code=2)
    if account is not None:
        return GuardScope.ACCOUNT, account
    assert reseller is not None
    return GuardScope.RESELLER, reseller


@margin_app.command("set")
def margin_set(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account", help="For this account's own calls."),
    reseller: str | None = typer.Option(
        None, "--reseller", help="For the calls of this reseller's customers."
    ),
    min_margin: str = typer.Option(
        ..., "--min", help="Least margin per minute (sell - buy of a 60 s call), e.g. 0.002."
    ),
    percent: str = typer.Option("0", "--percent", help="Least margin in % of the sell price."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Set the margin guard of an account or of a reseller's customers."""
    scope, account_id = _scope(account, reseller)
    try:
        guard = MarginGuard(
            parse_amount(min_margin, allow_negative=False),
            parse_amount(percent, max_decimals=2, allow_negative=False),
        )
    except (MoneyError, LcrError) as exc:
        raise fail(str(exc)) from exc

    async def put(store: CarrierStore, _engine: Any) -> None:
        await store.set_guard(scope, account_id, guard)

    _with_store(state(ctx).settings(), put)
    row = _guard_row(ScopedGuard(scope, account_id, guard))
    emit([row], GUARD_COLUMNS, as_json=as_json, title="margin guard")


@margin_app.command("clear")
def margin_clear(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account"),
    reseller: str | None = typer.Option(None, "--reseller"),
) -> None:
    """Remove the margin guard of an account or of a reseller's customers."""
    scope, account_id = _scope(account, reseller)

    async def clear(store: CarrierStore, _engine: Any) -> bool:
        return await store.clear_guard(scope, account_id)

    if not _with_store(state(ctx).settings(), clear):
        raise fail(f"no {scope} margin guard for {account_id!r}")
    typer.echo(f"{scope} margin guard of {account_id!r} removed")


@margin_app.command("show")
def margin_show(
    ctx: typer.Context,
    account: str | None = typer.Option(
        None, "--account", help="Only the guard in force for this account (own or reseller's)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show every margin guard, or the one in force for an account."""

    async def show(store: CarrierStore, _engine: Any) -> list[dict[str, Any]]:
        if account is None:
            return [_guard_row(g) for g in await store.list_guards()]
        found = await store.guard_in_force(account)
        return [] if found is None else [_guard_row(found)]

    rows = _with_store(state(ctx).settings(), show)
    emit(rows, GUARD_COLUMNS, as_json=as_json, title="margin guards")
