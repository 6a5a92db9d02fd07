"""The ``ratekeeper`` command line: run the daemon, the demo, migrations, rates, accounts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

import daemon.cli_caps  # noqa: F401  (accounts caps|suspend|resume|trial|convert)
from daemon.api.cli import api_app
from daemon.cli_accounts import accounts_app, calls_app, topup
from daemon.cli_carriers import carriers_app, margin_app
from daemon.cli_doctor import doctor
from daemon.cli_plans import bundles_app, tiers_app
from daemon.cli_rerate import rerate
from daemon.cli_seats import seats_app
from daemon.cli_support import CliState, emit, err_console, fail, run_async, state
from daemon.cli_usage import usage_app
from daemon.logging_setup import configure_logging
from tariffs.csv_deck import DeckImportError, dump_deck_csv, parse_deck_csv
from tariffs.deck import DeckInfo, Rounding
from tariffs.ratedeck import DeckError

app = typer.Typer(
    help="ratekeeper: real-time billing for Asterisk and FreeSWITCH call centers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
rates_app = typer.Typer(help="Rate decks.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(rates_app, name="rates")
app.add_typer(accounts_app, name="accounts")
app.add_typer(calls_app, name="calls")
app.add_typer(carriers_app, name="carriers")
app.add_typer(margin_app, name="margin")
app.add_typer(tiers_app, name="tiers")
app.add_typer(bundles_app, name="bundles")
app.add_typer(config_app, name="config")
app.add_typer(seats_app, name="seats")
app.add_typer(usage_app, name="usage")
app.add_typer(api_app, name="api")
app.command("topup")(topup)
app.command("rerate")(rerate)
app.command("doctor")(doctor)


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Configuration file (default /etc/ratekeeper/ratekeeper.toml)."
    ),
) -> None:
    """Options shared by every command."""
    # one-shot commands: only warnings, on stderr (stdout carries tables and JSON);
    # `run` reconfigures from the settings
    configure_logging("WARNING", "auto", stream=sys.stderr)
    cli_state = CliState()
    cli_state.config_path = config
    ctx.obj = cli_state


@app.command("run")
def run(ctx: typer.Context) -> None:
    """Run the daemon in the foreground (systemd runs this)."""
    from daemon.app import Daemon

    cli_state = state(ctx)
    settings = cli_state.settings()
    configure_logging(settings.logging.level, settings.logging.format)
    daemon = Daemon(settings, config_path=cli_state.config_path, reload_config_file=True)
    run_async(daemon.run_until_signalled, loop=settings.event_loop)


@app.command("demo")
def demo(
    ctx: typer.Context,
    calls: int = typer.Option(0, help="Load mode: this many random calls (0 = the scripted demo)."),
    cps: float = typer.Option(20.0, help="Load mode: calls per second."),
    state_dir: Path | None = typer.Option(
        None, help="Where the demo keeps its state (default: a temp dir)."
    ),
) -> None:
    """Run the daemon on embedded defaults against a simulated Asterisk, print a summary."""
    from daemon.demo import run_demo

    configure_logging("WARNING", "console")
    ok = run_async(lambda: run_demo(calls=calls, cps=cps, state_dir=state_dir), loop="auto")
    raise typer.Exit(0 if ok else 1)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, revision: str = typer.Option("head")) -> None:
    """Create or migrate the SQL schema (Alembic)."""
    from storage.migrate import current, upgrade

    settings = state(ctx).settings()
    url = settings.database_url()
    upgrade(url, revision)
    typer.echo(f"database at revision {current(url)}")


@rates_app.command("import")
def rates_import(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV rate deck."),
    deck: str = typer.Option(..., "--deck", help="Deck name (replaced atomically if it exists)."),
    currency: str = typer.Option("USD"),
    rounding: Rounding = typer.Option(Rounding.UP),
    decimals: int = typer.Option(6, min=0, max=6),
) -> None:
    """Load a CSV deck; a bad line rejects the whole file with its line number."""
    from daemon.app import open_resources
    from storage.decks import DeckStore

    settings = state(ctx).settings()
    info = DeckInfo(name=deck, currency=currency, rounding=rounding, decimals=decimals)
    try:
        parsed = parse_deck_csv(path.read_text(encoding="utf-8"), info)
    except DeckImportError as exc:
        err_console.print(f"[red]{path}: rejected, nothing loaded[/red]\n{exc}")
        raise typer.Exit(1) from exc
    except (DeckError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: {exc}") from exc

    async def store() -> None:
        res = await open_resources(settings)
        try:
            await DeckStore(res.engine).replace(parsed.info, list(parsed.rates))
        finally:
            await res.close()

    run_async(store)
    typer.echo(f"deck {deck!r}: {len(parsed.rates)} rates loaded from {path}")


@rates_app.command("list")
def rates_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List rate decks."""
    from daemon.app import open_resources
    from storage.decks import DeckStore

    settings = state(ctx).settings()

    async def listing() -> list[dict[str, object]]:
        res = await open_resources(settings)
        try:
            decks = await DeckStore(res.engine).load_all()
        finally:
            await res.close()
        return [
            {
                "deck": name,
                "currency": info.currency,
                "rounding": info.rounding.value,
                "rates": len(rates),
            }
            for name, (info, rates) in sorted(decks.items())
        ]

    emit(
        run_async(listing),
        ["deck", "currency", "rounding", "rates"],
        as_json=as_json,
        title="rate decks",
    )


@rates_app.command("export")
def rates_export(ctx: typer.Context, deck: str = typer.Option(..., "--deck")) -> None:
    """Print a deck as CSV (the import format)."""
    from daemon.app import open_resources
    from storage.decks import DeckStore
    from tariffs.ratedeck import RateDeck

    settings = state(ctx).settings()

    async def load() -> RateDeck | None:
        res = await open_resources(settings)
        try:
            found = await DeckStore(res.engine).load(deck)
        finally:
            await res.close()
        return None if found is None else RateDeck(found[0], found[1])

    loaded = run_async(load)
    if loaded is None:
        raise fail(f"unknown deck: {deck!r}")
    typer.echo(dump_deck_csv(loaded), nl=False)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration (secrets redacted) as JSON."""
    typer.echo(json.dumps(state(ctx).settings().redacted(), indent=2, default=str))


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the configuration file; exit 2 naming the bad key."""
    state(ctx).settings()
    typer.echo("configuration OK")


def main() -> None:
    """Console-script entry point."""
    app()
