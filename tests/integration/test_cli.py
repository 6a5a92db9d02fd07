"""The command line against real SQLite and Redis: accounts, top-ups, decks, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "ratekeeper.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "rk.db"}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
    )
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.output


def test_given_account_when_topped_up_twice_with_one_key_then_applied_once(config: Path) -> None:
    assert run(config, "db", "upgrade")[0] == 0
    code, out = run(
        config, "rates", "import", str(REPO / "config/decks/example.csv"), "--deck", "retail"
    )
    assert code == 0, out
    assert run(config, "accounts", "create", "cli-tenant", "--deck", "retail")[0] == 0
    for _ in range(2):
        code, out = run(
            config, "topup", "cli-tenant", "10.50", "--idempotency-key", "order-1", "--json"
        )
        assert code == 0, out
    assert json.loads(out)[0]["replayed"] == "True"
    code, out = run(config, "accounts", "show", "cli-tenant", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["balance"] == "10.500000"
    code, out = run(config, "accounts", "list", "--json")
    assert [row["id"] for row in json.loads(out)] == ["cli-tenant"]
    assert json.loads(run(config, "calls", "list", "--json")[1]) == []


def test_given_bad_deck_line_when_imported_then_line_named_and_nothing_loaded(
    config: Path, tmp_path: Path
) -> None:
    deck = tmp_path / "bad.csv"
    deck.write_text("prefix,destination,rate\n44,UK,0.02\n33,France,-0.01\n")
    code, out = run(config, "rates", "import", str(deck), "--deck", "bad")
    assert code == 1
    assert "line 3" in out
    code, out = run(config, "rates", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_given_unknown_config_key_when_checked_then_key_and_file_named(tmp_path: Path) -> None:
    path = tmp_path / "ratekeeper.toml"
    path.write_text('[redis]\nulr = "redis://x"\n')
    code, out = run(path, "config", "check")
    assert code == 2
    assert "redis.ulr" in out and str(path) in out


def test_given_bad_amount_when_topped_up_then_refused_naming_it(config: Path) -> None:
    code, out = run(config, "topup", "nobody", "1.0000001", "--idempotency-key", "k")
    assert code == 1 and "too many decimals" in out
    code, out = run(config, "topup", "nobody", "--idempotency-key", "k", "--", "-5")
    assert code == 1 and "negative" in out
