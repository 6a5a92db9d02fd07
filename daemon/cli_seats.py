"""CLI commands for agent seats: ``ratekeeper seats live|sessions|usage``.

``live`` reads the tenant's live seats from Redis (what the seat cap counts now);
``sessions`` and ``usage`` read the seat sessions in SQL (the record seat billing uses).
Times given as ``--since`` / ``--until`` are ISO dates or datetimes, UTC unless an offset
is given. ``usage`` covers the local calendar days ``--from`` to ``--to`` (both included)
in ``--tz``, by default the tenant account's time zone (UTC for a tenant without one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from balance.accounts import AccountStore
from balance.live import LiveStateError
from balance.seat_sessions import SeatSession, SeatSessions
from balance.seats import SeatState
from daemon.app import Resources, open_resources
from daemon.cli_support import emit, fail, run_async, state
from daemon.settings import Settings
from storage.engine import StorageError

T = TypeVar("T")

seats_app = typer.Typer(
    help="Live agent seats, seat sessions and seat usage.", no_args_is_help=True
)

LIVE_COLUMNS = ["seat", "switch_id", "since"]
SESSION_COLUMNS = ["seat", "name", "switch_id", "started_at", "ended_at", "end_reason"]
USAGE_COLUMNS = ["tenant", "from", "to", "tz", "peak_seats", "seat_days", "seat_hours"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _with_resources(settings: Settings, work: Callable[[Resources], Awaitable[T]]) -> T:
    """Run ``work(resources)`` against the configured SQL and Redis, then close them."""

    async def run() -> T:
        res = await open_resources(settings)
        try:
            return await work(res)
        finally:
            await res.close()

    try:
        return run_async(run)
    except (LiveStateError, StorageError, ValueError) as exc:
        raise fail(str(exc)) from exc


def _iso_us(value: int | None) -> str:
    if value is None:
        return ""
    return (_EPOCH + timedelta(microseconds=value)).isoformat()


def _us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment_us(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise fail(f"{option} {text!r}: an ISO date or datetime", 2) from exc
    return _us(value.replace(tzinfo=UTC) if value.tzinfo is None else value)


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise fail(f"{option} {text!r}: a date YYYY-MM-DD", 2) from exc


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise fail(f"--tz {name!r}: an unknown time zone", 2) from exc


def _session_row(session: SeatSession) -> dict[str, Any]:
    return {
        "seat": session.seat,
        "name": session.name,
        "switch_id": session.switch_id,
        "started_at": _iso_us(session.started_at_us),
        "ended_at": _iso_us(session.ended_at_us),
        "end_reason": session.end_reason,
    }


@seats_app.command("live")
def seats_live(
    ctx: typer.Context,
    tenant: str = typer.Argument(..., help="The tenant (account) whose live seats to list."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List a tenant's live seats as the seat cap counts them (Redis)."""

    async def live(res: Resources) -> list[dict[str, Any]]:
        seats = SeatState(res.redis, batch=False)
        found = await seats.live(tenant)
        return [
            {"seat": s.seat, "switch_id": s.switch_id, "since": _iso_us(s.since_us)}
            for s in sorted(found.values(), key=lambda s: (s.since_us, s.seat))
        ]

    rows = _with_resources(state(ctx).settings(), live)
    emit(rows, LIVE_COLUMNS, as_json=as_json, title=f"live seats of {tenant}")


@seats_app.command("sessions")
def seats_sessions(
    ctx: typer.Context,
    tenant: str = typer.Argument(...),
    since: str | None = typer.Option(None, "--since", help="Present from (default: ever)."),
    until: str | None = typer.Option(None, "--until", help="Present before (default: now on)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List a tenant's seat sessions present between --since and --until (SQL)."""
    since_us, until_us = _moment_us(since, "--since"), _moment_us(until, "--until")

    async def listing(res: Resources) -> list[SeatSession]:
        return await SeatSessions(res.engine).list(tenant, since_us, until_us)

    rows = [_session_row(s) for s in _with_resources(state(ctx).settings(), listing)]
    emit(rows, SESSION_COLUMNS, as_json=as_json, title=f"seat sessions of {tenant}")


@seats_app.command("usage")
def seats_usage(
    ctx: typer.Context,
    tenant: str = typer.Argument(...),
    first: str = typer.Option(..., "--from", help="First local day, YYYY-MM-DD."),
    last: str = typer.Option(..., "--to", help="Last local day (included), YYYY-MM-DD."),
    tz: str | None = typer.Option(None, "--tz", help="Time zone (default: the account's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A tenant's peak seats, seat-days and seat-hours over some local days (SQL)."""
    first_day, last_day = _day(first, "--from"), _day(last, "--to")
    if last_day < first_day:
        raise fail(f"--to {last} is before --from {first}", 2)
    if tz is not None:
        _zone(tz)

    async def usage(res: Resources) -> dict[str, Any]:
        zone_name = tz
        if zone_name is None:
            account = await AccountStore(res.engine).get(tenant)
            zone_name = "UTC" if account is None else account.timezone
        zone = _zone(zone_name)
        start = datetime.combine(first_day, datetime.min.time(), zone)
        end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), zone)
        found = await SeatSessions(res.engine).usage(tenant, _us(start), _us(end), zone_name)
        return {
            "tenant": tenant,
            "from": first_day.isoformat(),
            "to": last_day.isoformat(),
            "tz": zone_name,
            "peak_seats": found.peak_seats,
            "seat_days": found.seat_days,
            "seat_hours": _hours(found.seat_seconds),
            "seat_seconds": found.seat_seconds,
        }

    row = _with_resources(state(ctx).settings(), usage)
    emit([row], USAGE_COLUMNS, as_json=as_json, title=f"seat usage of {tenant}")


def _hours(seconds: int) -> str:
    """Seconds as hours with two decimals, rounded down (exact integer arithmetic)."""
    hundredths = seconds * 100 // 3600
    return f"{hundredths // 100}.{hundredths % 100:02d}"
