"""CLI commands for plans: ``ratekeeper tiers set|show|clear`` and ``bundles ...``.

A tier is ``THRESHOLD:DISCOUNT``: from THRESHOLD calls (or minutes) used this month on,
the deck's per-minute prices are DISCOUNT percent lower (``tariffs.tiers``). A bundle
includes ``--minutes`` per month for calls to its ``--prefix`` es (``tariffs.bundles``).
Months are calendar months in the account's time zone; ``--from`` / ``--to`` are ISO
dates or datetimes, UTC unless an offset is given. The daemon reads plans at start
(``TierService.reload``, ``BundleService.reload``): a change made here applies to the
calls authorized after its next reload or restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import AccountStore
from balance.bundle_store import BundleStore, BundleStoreError
from balance.usage import TierPlanStore, UnknownPlanAccount, usage_from_rated_calls
from daemon.app import open_resources
from daemon.cli_support import emit, fail, run_async, state
from daemon.settings import Settings
from tariffs.bundles import Bundle
from tariffs.tiers import PlanError, Tier, TierCounter, TierMode, TierPlan, period_of

T = TypeVar("T")

tiers_app = typer.Typer(help="Volume tiers: discounts from a usage on.", no_args_is_help=True)
bundles_app = typer.Typer(help="Bundled minutes per month for some prefixes.", no_args_is_help=True)

TIER_COLUMNS = ["account", "plan", "counter", "mode", "tiers", "period", "used"]
BUNDLE_COLUMNS = ["bundle", "minutes", "prefixes"]
HELD_COLUMNS = ["bundle", "minutes", "prefixes", "valid_from", "valid_to", "period", "used", "left"]


def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work(engine)`` against the configured database, then close it."""

    async def run() -> T:
        res = await open_resources(settings)
        try:
            return await work(res.engine)
        finally:
            await res.close()

    try:
        return run_async(run)
    except (BundleStoreError, UnknownPlanAccount, PlanError) as exc:
        raise fail(str(exc)) from exc


def _tier(text: str) -> Tier:
    threshold, sep, discount = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return Tier(int(threshold), Decimal(discount.rstrip("%")))
    except (ValueError, InvalidOperation) as exc:
        raise fail(f"--tier {text!r}: THRESHOLD:DISCOUNT_PERCENT, e.g. 100000:20", 2) from exc


def _tiers_text(plan: TierPlan) -> str:
    unit = "min" if plan.counter is TierCounter.MINUTES else "calls"
    return ", ".join(f"{t.threshold} {unit}: -{t.discount.normalize():f}%" for t in plan.tiers)


def _minutes(seconds: int) -> str:
    return f"{Decimal(seconds) / 60:.2f}".rstrip("0").rstrip(".")


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise fail(f"{option} {text!r}: an ISO date or datetime", 2) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def _zone(engine: AsyncEngine, account_id: str) -> str:
    account = await AccountStore(engine).get(account_id)
    if account is None:
        raise UnknownPlanAccount(f"unknown account: {account_id!r}")
    return account.timezone


@tiers_app.command("set")
def tiers_set(
    ctx: typer.Context,
    account: str = typer.Argument(..., help="The account the plan applies to."),
    tier: list[str] = typer.Option(
        ..., "--tier", help="THRESHOLD:DISCOUNT_PERCENT, repeatable, e.g. --tier 100000:20."
    ),
    counter: TierCounter = typer.Option(TierCounter.MINUTES, "--counter"),
    mode: TierMode = typer.Option(TierMode.ALL_UNITS, "--mode"),
    name: str = typer.Option("volume", "--name", help="The plan's name."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Give an account volume tiers (replacing its previous plan)."""
    try:
        plan = TierPlan(name, counter, mode, tuple(_tier(text) for text in tier))
    except PlanError as exc:
        raise fail(str(exc)) from exc

    async def put(engine: AsyncEngine) -> None:
        await TierPlanStore(engine).set(account, plan)

    _with_engine(state(ctx).settings(), put)
    row = {"account": account, "plan": plan.name, "counter": str(plan.counter)}
    row |= {"mode": str(plan.mode), "tiers": _tiers_text(plan)}
    emit([row], TIER_COLUMNS[:5], as_json=as_json, title="tier plan")


@tiers_app.command("show")
def tiers_show(
    ctx: typer.Context,
    account: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show an account's tier plan and its usage this month (from the rated calls)."""

    async def show(engine: AsyncEngine) -> dict[str, Any] | None:
        plan = await TierPlanStore(engine).get(account)
        if plan is None:
            return None
        tz = await _zone(engine, account)
        period = period_of(datetime.now(UTC), tz)
        usage = await usage_from_rated_calls(engine, account, period, tz)
        used = usage.calls if plan.counter is TierCounter.CALLS else _minutes(usage.seconds)
        return {
            "account": account,
            "plan": plan.name,
            "counter": str(plan.counter),
            "mode": str(plan.mode),
            "tiers": _tiers_text(plan),
            "period": period,
            "used": used,
        }

    row = _with_engine(state(ctx).settings(), show)
    if row is None:
        raise fail(f"account {account!r} has no tier plan")
    emit([row], TIER_COLUMNS, as_json=as_json, title="tier plan")


@tiers_app.command("clear")
def tiers_clear(ctx: typer.Context, account: str = typer.Argument(...)) -> None:
    """Remove an account's tier plan."""

    async def clear(engine: AsyncEngine) -> bool:
        return await TierPlanStore(engine).clear(account)

    if not _with_engine(state(ctx).settings(), clear):
        raise fail(f"account {account!r} has no tier plan")
    typer.echo(f"tier plan of {account!r} removed")


@bundles_app.command("create")
def bundles_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Bundle name (letters, digits, '_', '.', '-')."),
    minutes: int = typer.Option(..., "--minutes", min=0, help="Minutes included per month."),
    prefix: list[str] = typer.Option(..., "--prefix", help="A destination prefix, repeatable."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Define a bundle of minutes per month for some destination prefixes."""
    try:
        bundle = Bundle(name, minutes * 60, tuple(prefix))
    except PlanError as exc:
        raise fail(str(exc)) from exc

    async def create(engine: AsyncEngine) -> None:
        await BundleStore(engine).create(bundle)

    _with_engine(state(ctx).settings(), create)
    row = {"bundle": name, "minutes": minutes, "prefixes": " ".join(bundle.prefixes)}
    emit([row], BUNDLE_COLUMNS, as_json=as_json, title="bundle")


@bundles_app.command("list")
def bundles_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List bundle definitions."""

    async def listing(engine: AsyncEngine) -> list[Bundle]:
        return await BundleStore(engine).list()

    rows = [
        {"bundle": b.name, "minutes": _minutes(b.seconds), "prefixes": " ".join(b.prefixes)}
        for b in _with_engine(state(ctx).settings(), listing)
    ]
    emit(rows, BUNDLE_COLUMNS, as_json=as_json, title="bundles")


@bundles_app.command("assign")
def bundles_assign(
    ctx: typer.Context,
    account: str = typer.Argument(...),
    name: str = typer.Argument(..., metavar="BUNDLE"),
    valid_from: str | None = typer.Option(None, "--from", help="Start (default: now)."),
    valid_to: str | None = typer.Option(None, "--to", help="End, excluded (default: open)."),
) -> None:
    """Give an account a bundle (its whole allowance from the month it starts in)."""
    start, end = _moment(valid_from, "--from"), _moment(valid_to, "--to")

    async def assign(engine: AsyncEngine) -> None:
        await BundleStore(engine).assign(account, name, start, end)

    _with_engine(state(ctx).settings(), assign)
    typer.echo(f"bundle {name!r} assigned to {account!r}")


@bundles_app.command("unassign")
def bundles_unassign(
    ctx: typer.Context,
    account: str = typer.Argument(...),
    name: str = typer.Argument(..., metavar="BUNDLE"),
) -> None:
    """End an account's bundle now (its rated calls keep the seconds they used)."""

    async def unassign(engine: AsyncEngine) -> int:
        return await BundleStore(engine).unassign(account, name)

    if not _with_engine(state(ctx).settings(), unassign):
        raise fail(f"account {account!r} holds no open assignment of bundle {name!r}")
    typer.echo(f"bundle {name!r} of {account!r} ended")


@bundles_app.command("show")
def bundles_show(
    ctx: typer.Context,
    account: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show an account's bundles and the minutes used this month (from the rated calls)."""

    async def show(engine: AsyncEngine) -> list[dict[str, Any]]:
        store = BundleStore(engine)
        tz = await _zone(engine, account)
        now = datetime.now(UTC)
        period = period_of(now, tz)
        used = await store.used_seconds(account, period, tz)
        defined = {b.name: b for b in await store.list()}
        rows: list[dict[str, Any]] = []
        for item in await store.assignments(account):
            bundle = defined[item.bundle]
            spent = used.get(bundle.name, 0) if item.active(now) else 0
            rows.append(
                {
                    "bundle": bundle.name,
                    "minutes": _minutes(bundle.seconds),
                    "prefixes": " ".join(bundle.prefixes),
                    "valid_from": item.valid_from.isoformat(),
                    "valid_to": "" if item.valid_to is None else item.valid_to.isoformat(),
                    "period": period,
                    "used": _minutes(spent),
                    "left": _minutes(max(bundle.seconds - spent, 0)) if item.active(now) else "",
                }
            )
        return rows

    rows = _with_engine(state(ctx).settings(), show)
    emit(rows, HELD_COLUMNS, as_json=as_json, title=f"bundles of {account}")
