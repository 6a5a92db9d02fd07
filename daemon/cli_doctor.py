"""``ratekeeper doctor``: one line per check of the configuration and every connection.

::

    OK   redis  redis 7.0.15 at redis://127.0.0.1:6379/0, 9 Lua scripts load
    FAIL ami pbx-1  login refused for user 'billing' at 127.0.0.1:5038 (Authentication failed)

Exit code 0 when every check passed, 1 otherwise; ``--json`` prints the list instead.
An invalid configuration is reported as the failed ``config`` check (not exit code 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from daemon.cli_support import run_async, state
from daemon.doctor import Check, run_checks
from daemon.settings import ConfigError, Settings, load_settings


def format_check(check: Check) -> str:
    """``OK   name  detail`` or ``FAIL name  detail``."""
    return f"{'OK' if check.ok else 'FAIL':<5}{check.name}  {check.detail}"


def doctor(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    timeout: float = typer.Option(3.0, min=0.1, help="Seconds each check may take."),
) -> None:
    """Check the configuration and every connection; say what is wrong, one line each."""
    loaded: Settings | ConfigError
    try:
        loaded = load_settings(state(ctx).config_path)
    except ConfigError as exc:
        loaded = exc
    checks = run_async(lambda: run_checks(loaded, timeout=timeout))
    if as_json:
        typer.echo(json.dumps([asdict(check) for check in checks], indent=2))
    else:
        for check in checks:
            typer.echo(format_check(check))
    raise typer.Exit(0 if all(check.ok for check in checks) else 1)
