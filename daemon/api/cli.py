"""CLI commands of the management API: ``ratekeeper api openapi`` and ``ratekeeper api keys``.

Registered in ``daemon/cli.py`` with ``app.add_typer(api_app, name="api")``. ``keys
create`` prints the new key once (it is stored hashed and cannot be shown again); every
other command shows keys by id and prefix only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from balance.accounts import AccountError
from balance.api_keys import ApiKeyError, ApiKeyStore, KeyInfo
from daemon.cli_support import emit, fail, run_async, state

api_app = typer.Typer(help="The management API: OpenAPI document, API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (shown once, stored hashed).", no_args_is_help=True)
api_app.add_typer(keys_app, name="keys")

_KEY_COLUMNS = ["id", "prefix", "role", "account", "name", "created_at", "revoked_at"]


def _key_row(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "prefix": info.prefix,
        "role": info.role,
        "account": info.account_id or "",
        "name": info.name,
        "created_at": info.created_at.isoformat(),
        "revoked_at": "" if info.revoked_at is None else info.revoked_at.isoformat(),
    }


@api_app.command("openapi")
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (else stdout).")
    ] = None,
) -> None:
    """Print (or write) the OpenAPI document the API serves at /openapi.json."""
    from daemon.api.openapi import openapi_document, render

    text = render(openapi_document())
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"OpenAPI document written to {output}")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="operator, reseller or customer.")],
    account: Annotated[
        str | None, typer.Option(help="The account a reseller/customer key is for.")
    ] = None,
    name: Annotated[str, typer.Option(help="What the key is for (shown in listings).")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key; its plaintext is printed this once only."""
    from daemon.app import open_resources

    settings = state(ctx).settings()

    async def create() -> tuple[KeyInfo, str]:
        res = await open_resources(settings)
        try:
            return await ApiKeyStore(res.engine).create(role, account, name)
        finally:
            await res.close()

    try:
        info, plaintext = run_async(create)
    except (ApiKeyError, AccountError) as exc:
        raise fail(str(exc)) from exc
    row = {**_key_row(info), "key": plaintext}
    emit([row], ["id", "prefix", "role", "account", "key"], as_json=as_json, title="api key")
    if not as_json:
        typer.echo("Store the key now: it is kept hashed and cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option(help="Only this account's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List keys by id and prefix (never the keys themselves)."""
    from daemon.app import open_resources

    settings = state(ctx).settings()

    async def listing() -> list[KeyInfo]:
        res = await open_resources(settings)
        try:
            return await ApiKeyStore(res.engine).list(account)
        finally:
            await res.close()

    emit([_key_row(i) for i in run_async(listing)], _KEY_COLUMNS, as_json=as_json, title="keys")


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[int, typer.Argument(help="The key's id.")]
) -> None:
    """Revoke a key: it stops authenticating at once (its row is kept)."""
    from daemon.app import open_resources

    settings = state(ctx).settings()

    async def revoke() -> KeyInfo:
        res = await open_resources(settings)
        try:
            return await ApiKeyStore(res.engine).revoke(key_id)
        finally:
            await res.close()

    try:
        info = run_async(revoke)
    except ApiKeyError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"api key {info.id} ({info.prefix}) revoked")
