"""API keys: stored hashed, shown once, verified, listed, revoked; and their CLI."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from balance.accounts import Account, AccountStore, UnknownAccount
from balance.api_keys import ApiKeyStore, InvalidApiKey, Principal, UnknownApiKey
from daemon.api.cli import api_app
from daemon.api.openapi import openapi_document, render
from daemon.cli_support import CliState
from daemon.logging_setup import configure_logging
from storage.api_key_tables import api_keys
from tests.integration.api_fixtures import unique


async def test_given_a_new_key_when_stored_then_only_its_hash_and_prefix_are_kept(
    sql_engine: AsyncEngine,
) -> None:
    account = unique("acct")
    await AccountStore(sql_engine).create(Account(id=account))
    store = ApiKeyStore(sql_engine)
    info, plaintext = await store.create("customer", account, "portal")
    assert plaintext.startswith("rk_") and len(plaintext) == 46
    assert info.prefix == plaintext[:8]
    async with sql_engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert plaintext not in [str(value) for value in row]
    assert row.hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert await store.verify(plaintext) == Principal("customer", account, info.prefix)
    assert await store.verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert await store.verify("") is None
    assert await store.verify("rk_short") is None


async def test_given_keys_when_listed_and_revoked_then_revoked_stop_authenticating(
    sql_engine: AsyncEngine,
) -> None:
    store = ApiKeyStore(sql_engine)
    first, first_key = await store.create("operator", None, "one")
    second, second_key = await store.create("operator", None, "two")
    revoked = await store.revoke(first.id)
    assert revoked.revoked_at is not None and not revoked.active
    assert (await store.revoke(first.id)).revoked_at == revoked.revoked_at
    assert await store.verify(first_key) is None
    assert await store.verify(second_key) == Principal("operator", None, second.prefix)
    assert [(k.id, k.active) for k in await store.list()] == [(first.id, False), (second.id, True)]
    with pytest.raises(UnknownApiKey):
        await store.revoke(999_999)


@pytest.mark.parametrize(
    ("role", "account", "field"),
    [
        ("admin", None, "role"),
        ("operator", "acct", "account_id"),
        ("reseller", None, "account_id"),
        ("customer", "", "account_id"),
    ],
)
async def test_given_a_bad_key_request_when_created_then_error_names_the_field(
    sql_engine: AsyncEngine, role: str, account: str | None, field: str
) -> None:
    with pytest.raises(InvalidApiKey) as caught:
        await ApiKeyStore(sql_engine).create(role, account)
    assert caught.value.field == field


async def test_given_an_unknown_account_when_a_key_is_created_then_refused(
    sql_engine: AsyncEngine,
) -> None:
    with pytest.raises(UnknownAccount):
        await ApiKeyStore(sql_engine).create("reseller", "nobody-here")
    assert await ApiKeyStore(sql_engine).list() == []


def cli() -> typer.Typer:
    """The ``api`` commands under a root like ``ratekeeper``'s (``--config``)."""
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context, config: Path = typer.Option(..., "--config")) -> None:  # noqa: B008
        configure_logging("WARNING", "auto", stream=sys.stderr)
        state = CliState()
        state.config_path = config
        ctx.obj = state

    root.add_typer(api_app, name="api")
    return root


def test_given_the_cli_when_keys_are_created_listed_revoked_then_plaintext_shown_once(
    tmp_path: Path, redis_url: str
) -> None:
    config = tmp_path / "ratekeeper.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "rk.db"}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
    )
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli(), ["--config", str(config), "api", *args])
        assert result.exit_code == 0, result.output
        return result.output

    created = json.loads(run("keys", "create", "--role", "operator", "--name", "ops", "--json"))
    plaintext = created[0]["key"]
    assert plaintext.startswith("rk_")
    listing = run("keys", "list", "--json")
    assert plaintext not in listing
    assert json.loads(listing)[0]["prefix"] == plaintext[:8]
    assert "revoked" in run("keys", "revoke", str(created[0]["id"]))
    assert json.loads(run("keys", "list", "--json"))[0]["revoked_at"] != ""
    refused = runner.invoke(
        cli(), ["--config", str(config), "api", "keys", "create", "--role", "reseller"]
    )
    assert refused.exit_code == 1
    assert "account_id" in refused.output
    assert run("openapi") == render(openapi_document())
