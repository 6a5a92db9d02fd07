"""``ratekeeper usage concurrency``: peak concurrency and overage of a concurrency package.

The window is ``--period YYYY-MM`` (a calendar month) or ``--from`` / ``--to``: ISO dates
or datetimes in the report's time zone (``--tz``, by default the account's) unless an
offset is given; ``--from`` is inclusive, a date ``--to`` includes that whole day, a
datetime ``--to`` is excluded. ``--package`` channels are included; every channel-second
above them is overage, priced at ``--overage-rate`` per channel-minute (rounded up to
10^-6). The figures come from the rated calls (``balance.concurrency_usage``).

The package and the rate will come from the account's settings: the command only passes
its options to :func:`account_concurrency_usage`, which takes them as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.accounts import AccountStore
from balance.concurrency_usage import ConcurrencyUsage, concurrency_usage, month_usage
from daemon.app import open_resources
from daemon.cli_support import console, emit, fail, run_async, state
from daemon.settings import Settings
from tariffs.concurrency import ConcurrencyError, from_us, to_us, zone
from tariffs.money import MoneyError, from_micros, parse_amount
from tariffs.tiers import PlanError

usage_app = typer.Typer(help="Usage reports from the rated calls.", no_args_is_help=True)

# the rows of the summary table (JSON has every field of usage_row)
SUMMARY_COLUMNS = [
    "account", "period", "from", "to", "tz", "package", "calls", "peak",
    "overage_seconds", "overage_rate", "overage_cost", "currency",
]  # fmt: skip


class UnknownUsageAccount(LookupError):
    """The report names an account that does not exist."""

    code = "UNKNOWN_ACCOUNT"


@dataclass(frozen=True, slots=True)
class ReportWindow:
    """A report's window: a month ``period``, or ``start`` / ``end`` as given on the CLI."""

    period: str | None = None
    start: str | None = None
    end: str | None = None

    def __post_init__(self) -> None:
        if self.period is not None and (self.start is not None or self.end is not None):
            raise ConcurrencyError("give --period or --from/--to, not both")
        if self.period is None and (self.start is None or self.end is None):
            raise ConcurrencyError("give --period YYYY-MM, or both --from and --to")

    def bounds_us(self, tz: str) -> tuple[int, int]:
        """``[start, end)`` in epoch microseconds (naive values are local to ``tz``)."""
        assert self.start is not None and self.end is not None
        start_us = _bound(self.start, "--from", tz, end=False)
        end_us = _bound(self.end, "--to", tz, end=True)
        if end_us <= start_us:
            raise ConcurrencyError(f"--to {self.end!r} is not after --from {self.start!r}")
        return start_us, end_us


def _bound(text: str, option: str, tz: str, *, end: bool) -> int:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ConcurrencyError(
                f"{option} {text!r}: not an ISO date or datetime (2026-11-01, 2026-11-01T08:00)"
            ) from exc
        return to_us(moment if moment.tzinfo else moment.replace(tzinfo=zone(tz)))
    day += timedelta(days=1) if end else timedelta(0)
    return to_us(datetime(day.year, day.month, day.day, tzinfo=zone(tz)))


async def account_concurrency_usage(
    engine: AsyncEngine,
    account_id: str,
    window: ReportWindow,
    *,
    package: int | None = None,
    overage_price_per_minute: Decimal | None = None,
    tz: str | None = None,
) -> tuple[ConcurrencyUsage, str]:
    """The account's usage over ``window`` and its currency; ``tz`` defaults to the
    account's zone, ``package`` and the overage price to the account's concurrency
    package (0 without one). Raises ``UnknownUsageAccount``, ``ConcurrencyError``,
    ``PlanError``."""
    account = await AccountStore(engine).get(account_id)
    if account is None:
        raise UnknownUsageAccount(f"unknown account: {account_id!r}")
    if package is None:
        package = account.concurrency_package or 0
    if overage_price_per_minute is None:
        overage_price_per_minute = from_micros(account.overage_rate_micros or 0)
    zone_name = tz or account.timezone
    args: dict[str, Any] = {"package": package, "tz": zone_name}
    args["overage_price_per_minute"] = overage_price_per_minute
    if window.period is not None:
        return await month_usage(engine, account_id, window.period, **args), account.currency
    start_us, end_us = window.bounds_us(zone_name)
    return await concurrency_usage(engine, account_id, start_us, end_us, **args), account.currency


def usage_row(usage: ConcurrencyUsage, currency: str) -> dict[str, Any]:
    """The usage as JSON-ready data (seconds and money as decimal strings)."""
    return {
        "account": usage.account_id,
        "period": usage.period or "",
        "from": from_us(usage.start_us, usage.tz).isoformat(),
        "to": from_us(usage.end_us, usage.tz).isoformat(),
        "tz": usage.tz,
        "package": usage.package,
        "calls": usage.calls,
        "peak": usage.peak,
        "overage_seconds": f"{usage.overage_seconds:f}",
        "overage_us": usage.overage_us,
        "overage_rate": f"{usage.overage_price_per_minute:f}",
        "overage_cost": f"{usage.overage_cost:f}",
        "overage_cost_micros": usage.overage_cost_micros,
        "currency": currency,
        "daily_peaks": {day.isoformat(): peak for day, peak in usage.daily_peaks.items()},
    }


def show_concurrency(
    settings: Settings,
    account_id: str,
    window: ReportWindow,
    *,
    package: int | None = None,
    overage_price_per_minute: Decimal | None = None,
    tz: str | None = None,
    as_json: bool = False,
) -> ConcurrencyUsage:
    """Compute and print the report (a table, or JSON); exit 1 naming a bad input."""

    async def report() -> tuple[ConcurrencyUsage, str]:
        res = await open_resources(settings)
        try:
            return await account_concurrency_usage(
                res.engine,
                account_id,
                window,
                package=package,
                overage_price_per_minute=overage_price_per_minute,
                tz=tz,
            )
        finally:
            await res.close()

    try:
        usage, currency = run_async(report)
    except (UnknownUsageAccount, ConcurrencyError, PlanError) as exc:
        raise fail(str(exc)) from exc
    row = usage_row(usage, currency)
    if as_json:
        emit([row], list(row), as_json=True, title="concurrency")
        return usage
    summary = [{"field": column, "value": row[column]} for column in SUMMARY_COLUMNS]
    emit(summary, ["field", "value"], as_json=False, title=f"concurrency of {account_id}")
    daily = [{"day": day, "peak": peak} for day, peak in row["daily_peaks"].items()]
    emit(daily, ["day", "peak"], as_json=False, title="peak per day")
    console.print(f"overage: {row['overage_seconds']} channel-seconds above {usage.package}")
    return usage


@usage_app.command("concurrency")
def usage_concurrency(
    ctx: typer.Context,
    account: str = typer.Argument(..., help="The account."),
    period: str | None = typer.Option(None, "--period", help="A month, YYYY-MM."),
    start: str | None = typer.Option(None, "--from", help="First day or datetime, inclusive."),
    end: str | None = typer.Option(None, "--to", help="Last day (included) or datetime."),
    package: int | None = typer.Option(
        None, "--package", min=0, help="Concurrent calls included (default: the account's)."
    ),
    overage_rate: str | None = typer.Option(
        None, "--overage-rate", help="Price of a channel-minute above it (default: account's)."
    ),
    tz: str | None = typer.Option(None, "--tz", help="Time zone (default: the account's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Peak concurrency (per period and per local day) and overage channel-seconds."""
    try:
        price = None if overage_rate is None else parse_amount(overage_rate, allow_negative=False)
        window = ReportWindow(period, start, end)
    except MoneyError as exc:
        raise fail(f"--overage-rate: {exc}", 2) from exc
    except ConcurrencyError as exc:
        raise fail(str(exc), 2) from exc
    show_concurrency(
        state(ctx).settings(),
        account,
        window,
        package=package,
        overage_price_per_minute=price,
        tz=tz,
        as_json=as_json,
    )
