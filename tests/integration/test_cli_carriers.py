"""``ratekeeper carriers`` and ``ratekeeper margin`` against a real migrated SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "ratekeeper.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "rk.db"}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
    )
    code, out = run(path, "db", "upgrade")
    assert code == 0, out
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.output


def test_given_carriers_when_added_listed_removed_then_json_matches(
    config: Path, tmp_path: Path
) -> None:
    deck = tmp_path / "buy.csv"
    deck.write_text("prefix,destination,rate\n44,UK,0.02\n")
    assert run(config, "rates", "import", str(deck), "--deck", "buy-gw1")[0] == 0
    code, out = run(
        config,
        "carriers",
        "add",
        "gw1",
        "--deck",
        "buy-gw1",
        "--dial",
        "PJSIP/{number}@{carrier}",
        "--priority",
        "2",
        "--weight",
        "7",
        "--concurrency-limit",
        "30",
        "--cps-limit",
        "5",
        "--json",
    )
    assert code == 0, out
    assert "not loaded" not in out
    code, out = run(
        config, "carriers", "add", "gw2", "--deck", "later", "--dial", "sofia/gateway/gw2/{number}"
    )
    assert code == 0, out
    assert "'later' is not loaded yet" in out  # a warning, the carrier is added
    code, out = run(config, "carriers", "list", "--json")
    assert code == 0, out
    assert json.loads(out) == [
        {
            "id": "gw1",
            "name": "",
            "buy_deck": "buy-gw1",
            "dial_template": "PJSIP/{number}@{carrier}",
            "priority": 2,
            "weight": 7,
            "enabled": True,
            "concurrency_limit": 30,
            "cps_limit": 5,
        },
        {
            "id": "gw2",
            "name": "",
            "buy_deck": "later",
            "dial_template": "sofia/gateway/gw2/{number}",
            "priority": 0,
            "weight": 0,
            "enabled": True,
            "concurrency_limit": None,
            "cps_limit": None,
        },
    ]
    code, out = run(config, "carriers", "add", "gw1", "--deck", "x", "--dial", "SIP/{number}")
    assert code == 1 and "carrier exists" in out
    assert run(config, "carriers", "remove", "gw2")[0] == 0
    code, out = run(config, "carriers", "remove", "gw2")
    assert code == 1 and "unknown carrier" in out
    assert [c["id"] for c in json.loads(run(config, "carriers", "list", "--json")[1])] == ["gw1"]


@pytest.mark.parametrize(
    ("dial", "message"),
    [
        ("PJSIP/{number}@a,b", "interpret"),
        ("PJSIP/{exten}@gw", "only {number} and {carrier}"),
        ("PJSIP/${TRUNK}/{number}", "interpret"),
    ],
)
def test_given_unsafe_dial_template_when_added_then_refused_and_nothing_stored(
    config: Path, dial: str, message: str
) -> None:
    code, out = run(config, "carriers", "add", "gw", "--deck", "d", "--dial", dial)
    assert code == 1 and message in " ".join(out.split())
    assert json.loads(run(config, "carriers", "list", "--json")[1]) == []


def test_given_reseller_and_customer_when_margins_set_then_shown_and_resolved(
    config: Path,
) -> None:
    assert run(config, "accounts", "create", "res")[0] == 0
    assert run(config, "accounts", "create", "cust", "--parent", "res")[0] == 0
    code, out = run(
        config, "margin", "set", "--reseller", "res", "--min", "0.002", "--percent", "10"
    )
    assert code == 0, out
    code, out = run(config, "margin", "show", "--account", "cust", "--json")
    assert json.loads(out) == [
        {"scope": "reseller", "account": "res", "min_margin": "0.002", "min_margin_percent": "10"}
    ]
    assert run(config, "margin", "set", "--account", "cust", "--min", "0.01")[0] == 0
    code, out = run(config, "margin", "show", "--json")
    assert code == 0, out
    assert json.loads(out) == [
        {"scope": "account", "account": "cust", "min_margin": "0.01", "min_margin_percent": "0"},
        {"scope": "reseller", "account": "res", "min_margin": "0.002", "min_margin_percent": "10"},
    ]
    shown = json.loads(run(config, "margin", "show", "--account", "cust", "--json")[1])
    assert shown[0]["scope"] == "account"
    assert json.loads(run(config, "margin", "show", "--account", "res", "--json")[1]) == []
    assert run(config, "margin", "clear", "--account", "cust")[0] == 0
    assert json.loads(run(config, "margin", "show", "--account", "cust", "--json")[1])[0][
        "account"
    ] == "res"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--account", "nobody", "--min", "0.01"], 1, "unknown account"),
        (["--min", "0.01"], 2, "exactly one of --account or --reseller"),
        (["--account", "a", "--reseller", "b", "--min", "0.01"], 2, "exactly one"),
        (["--account", "a", "--min", "0.0000001"], 1, "too many decimals"),
        (["--account", "a", "--min", "0.01", "--percent", "101"], 1, "at most 100"),
        (["--account", "a", "--min", "-1"], 1, "negative"),
    ],
)
def test_given_bad_margin_when_set_then_refused_naming_why(
    config: Path, args: list[str], code: int, message: str
) -> None:
    result_code, out = run(config, "margin", "set", *args)
    assert result_code == code and message in out, out
