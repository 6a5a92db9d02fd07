"""Shared plumbing of the CLI commands: settings from ``--config``, output as table or JSON."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from daemon import event_loop
from daemon.event_loop import EventLoopChoice
from daemon.settings import ConfigError, Settings, load_settings

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


class CliState:
    """What the top-level callback parsed: the configuration file."""

    def __init__(self) -> None:
        self.config_path: Path | None = None
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """Load (once) and return the settings; a bad configuration exits with code 2."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                err_console.print(f"[red]configuration error:[/red] {exc}")
                raise typer.Exit(2) from exc
        return self._settings


def state(ctx: typer.Context) -> CliState:
    """The CLI state stored on the root context."""
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def run_async(factory: Callable[[], Awaitable[T]], loop: EventLoopChoice = "asyncio") -> T:
    """Run a coroutine to completion from a synchronous command, on ``loop``
    (``daemon.event_loop``; the daemon's own commands pass its setting)."""

    async def _main() -> T:
        return await factory()

    try:
        return event_loop.run(_main(), loop)
    except event_loop.EventLoopUnavailable as exc:
        raise fail(str(exc), code=2) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error in one line and return the Exit to raise."""
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def emit(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool, title: str
) -> None:
    """Print rows as a rich table, or as JSON with ``--json``."""
    if as_json:
        typer.echo(json.dumps(list(rows), indent=2, default=str))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    console.print(table)
