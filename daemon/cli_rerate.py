"""``ratekeeper rerate``: re-price rated calls after a deck correction (``balance.rerate``).

``--from`` and ``--to`` take an ISO date (``2026-11-01``) or datetime
(``2026-11-01T08:00``, naive = UTC, or with an offset). The window holds the calls that
STARTED in it: ``--from`` is inclusive; a date ``--to`` includes that whole day, a
datetime ``--to`` is exclusive.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from balance.accounts import AccountStore
from balance.live import LiveState
from balance.rerate import RerateError, Rerater, RerateReport
from daemon.app import load_catalog, open_resources
from daemon.cli_support import console, emit, err_console, fail, run_async, state
from storage.decks import DeckStore
from tariffs.money import format_money


def parse_bound(text: str, option: str, *, end: bool) -> datetime:
    """An aware UTC datetime from an ISO date or datetime; a date ``end`` is the next day.

    A bad value raises ``typer.BadParameter`` naming ``option`` (exit code 2).
    """
    try:
        day = date.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise typer.BadParameter(
                f"not an ISO date or datetime (2026-11-01, 2026-11-01T08:00): {text!r}",
                param_hint=f"'{option}'",
            ) from exc
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end else start


def report_json(report: RerateReport, since: datetime, until: datetime) -> dict[str, Any]:
    """The report as JSON-ready data (money as decimal strings)."""
    return {
        "from": since.isoformat(),
        "to": until.isoformat(),
        "dry_run": report.dry_run,
        "examined": report.examined,
        "changed": report.changed,
        "unchanged": report.unchanged,
        "skipped": report.skipped,
        "raced": report.raced,
        "live_unsynced": report.live_unsynced,
        "differences": [
            {
                "account": d.account_id,
                "currency": d.currency,
                "calls": d.calls,
                "difference": format_money(d.difference_micros),
            }
            for d in report.differences
        ],
    }


def rerate(
    ctx: typer.Context,
    since_text: str = typer.Option(
        ..., "--from", help="First day (ISO date, UTC) or datetime, inclusive."
    ),
    until_text: str = typer.Option(
        ..., "--to", help="Last day (ISO date, included) or datetime (excluded)."
    ),
    account: str | None = typer.Option(None, "--account", help="Only this account's calls."),
    deck: str | None = typer.Option(None, "--deck", help="Only the calls rated with this deck."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report the differences, write none."),
    as_json: bool = typer.Option(False, "--json"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Configuration file (as the global --config)."
    ),
) -> None:
    """Re-price rated calls with the corrected decks; post each difference once."""
    since = parse_bound(since_text, "--from", end=False)
    until = parse_bound(until_text, "--to", end=True)
    if since >= until:
        raise typer.BadParameter(
            f"--from ({since.isoformat()}) must be before --to ({until.isoformat()})",
            param_hint="'--from' / '--to'",
        )
    cli_state = state(ctx)
    if config is not None:
        cli_state.config_path = config
    settings = cli_state.settings()

    async def run() -> RerateReport | str:
        res = await open_resources(settings)
        try:
            if account is not None and await AccountStore(res.engine).get(account) is None:
                return f"unknown account: {account!r}"
            catalog = await load_catalog(DeckStore(res.engine))
            if deck is not None and deck not in catalog.names():
                return f"unknown deck: {deck!r}"
            live = LiveState(res.redis, batch=False)
            return await Rerater(res.engine, live).rerate(
                since=since,
                until=until,
                account=account,
                deck=deck,
                catalog=catalog,
                dry_run=dry_run,
            )
        finally:
            await res.close()

    try:
        report = run_async(run)
    except RerateError as exc:
        raise fail(f"{exc} (code {exc.code})") from exc
    if isinstance(report, str):
        raise fail(report)
    _print(report, since, until, as_json=as_json)
    if report.live_unsynced:
        err_console.print(
            f"[yellow]warning:[/yellow] {report.live_unsynced} adjustment(s) are in the ledger "
            "but not in the live balance (Redis unreachable): restart the daemon to rebuild it"
        )
        raise typer.Exit(1)


def _print(report: RerateReport, since: datetime, until: datetime, *, as_json: bool) -> None:
    data = report_json(report, since, until)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    summary = {key: value for key, value in data.items() if key != "differences"}
    summary["skipped"] = ", ".join(f"{k}={v}" for k, v in report.skipped.items()) or "0"
    title = "rerate (dry run: nothing written)" if report.dry_run else "rerate"
    rows = [{"": key, "value": value} for key, value in summary.items()]
    emit(rows, ["", "value"], as_json=False, title=title)
    if data["differences"]:
        emit(
            data["differences"],
            ["account", "currency", "calls", "difference"],
            as_json=False,
            title="differences (new - effective cost; > 0 the account pays more)",
        )
    else:
        console.print("no differences")
