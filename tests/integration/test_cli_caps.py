"""``ratekeeper accounts caps|suspend|resume|trial|convert``, ``topup`` resuming a postpaid
account, ``usage concurrency`` and ``seats``: real SQLite and Redis, through the CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from balance import keys
from daemon.cli import app


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "ratekeeper.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "rk.db"}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
        "[caps.trial]\ndays = 7\ncredit = \"2.50\"\nconcurrency_limit = 2\n"
    )
    code, out = run(path, "db", "upgrade")
    assert code == 0, out
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.output


def _hot(redis_url: str, account: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return client.hgetall(keys.account_key(account))  # type: ignore[return-value]
    finally:
        client.close()


def _account(config: Path, *extra: str) -> str:
    account = f"cli-caps-{uuid.uuid4().hex[:8]}"
    code, out = run(config, "accounts", "create", account, *extra)
    assert code == 0, out
    return account


def test_given_caps_when_set_then_sql_and_redis_have_them_at_once(
    config: Path, redis_url: str
) -> None:
    account = _account(config)
    code, out = run(
        config,
        "accounts",
        "caps",
        account,
        "--concurrency-limit",
        "60",
        "--package",
        "50",
        "--overage-rate",
        "0.01",
        "--cps-limit",
        "5",
        "--seat-limit",
        "12",
        "--low-balance",
        '[{"amount": "5.00"}, {"minutes": 10}]',
        "--json",
    )
    assert code == 0, out
    [row] = json.loads(out)
    assert (row["concurrency_limit"], row["concurrency_package"], row["overage_rate"]) == (
        60,
        50,
        "0.010000",
    )
    assert (row["cps_limit"], row["seat_limit"]) == (5, 12)
    hot = _hot(redis_url, account)
    assert (hot["concurrency_limit"], hot["cps_limit"], hot["seat_limit"]) == ("60", "5", "12")

    code, out = run(config, "accounts", "caps", account, "--cps-limit", "none", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["cps_limit"] is None and _hot(redis_url, account)["cps_limit"] == "-1"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--cps-limit", "many"], "--cps-limit"),
        (["--package", "-3"], "--package"),
        (["--overage-rate", "0.1234567"], "--overage-rate"),
        (["--low-balance", '[{"amount": "lots"}]'], "--low-balance"),
        (["--low-balance", '{"minutes": 5}'], "--low-balance"),
        (["--concurrency-limit", "10", "--package", "20"], "concurrency_package"),
        ([], "nothing to change"),
    ],
)
def test_given_a_bad_cap_when_set_then_the_option_is_named_and_nothing_changes(
    config: Path, args: list[str], named: str
) -> None:
    account = _account(config)
    code, out = run(config, "accounts", "caps", account, *args)
    assert code != 0 and named in out
    code, out = run(config, "accounts", "show", account, "--json")
    assert code == 0 and json.loads(out)[0]["concurrency_limit"] is None


def test_given_suspend_and_resume_then_status_and_reason_follow_in_sql_and_redis(
    config: Path, redis_url: str
) -> None:
    account = _account(config)
    code, out = run(config, "accounts", "suspend", account, "--reason", "unpaid", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["status"] == "suspended"
    assert json.loads(out)[0]["status_reason"] == "unpaid"
    assert _hot(redis_url, account)["status"] == "suspended"
    code, out = run(config, "accounts", "resume", account, "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "active"
    assert _hot(redis_url, account)["status"] == "active"
    assert run(config, "accounts", "suspend", "no-such-account")[0] == 1


def test_given_a_trial_when_started_twice_and_converted_then_credit_once_and_caps_lifted(
    config: Path, redis_url: str
) -> None:
    account = _account(config, "--concurrency-limit", "10")
    for _ in range(2):
        code, out = run(config, "accounts", "trial", account, "--json")
        assert code == 0, out
    [row] = json.loads(out)
    assert row["trial_ends_at"] and row["trial_credit"] == "2.50"
    hot = _hot(redis_url, account)
    assert hot["concurrency_limit"] == "2" and int(hot["trial_ends"]) > 0  # the trial's cap
    assert hot["balance"] == "2500000"  # the trial credit, once
    code, out = run(config, "accounts", "convert", account, "--json")
    assert code == 0 and json.loads(out)[0]["trial_ends_at"] is None
    hot = _hot(redis_url, account)
    assert (hot["concurrency_limit"], hot["trial_ends"]) == ("10", "-1")  # its own again


def test_given_postpaid_account_suspended_at_its_limit_when_paid_then_topup_resumes_it(
    config: Path, redis_url: str
) -> None:
    account = _account(config, "--billing", "postpaid", "--credit-limit", "5")
    code, out = run(config, "accounts", "suspend", account, "--reason", "credit_limit")
    assert code == 0, out
    code, out = run(config, "topup", account, "1.00", "--idempotency-key", f"pay-{account}")
    assert code == 0, out
    assert _hot(redis_url, account)["status"] == "active"
    # an operator's suspension is not lifted by a payment
    run(config, "accounts", "suspend", account)
    run(config, "topup", account, "1.00", "--idempotency-key", f"pay2-{account}")
    assert _hot(redis_url, account)["status"] == "suspended"


def test_given_an_account_without_calls_then_usage_and_seats_report_zero(config: Path) -> None:
    account = _account(config)
    run(config, "accounts", "caps", account, "--package", "3", "--overage-rate", "0.02")
    code, out = run(config, "usage", "concurrency", account, "--period", "2026-11", "--json")
    assert code == 0, out
    [row] = json.loads(out)
    assert (row["package"], row["overage_rate"], row["peak"]) == (3, "0.020000", 0)
    code, out = run(config, "seats", "live", account, "--json")
    assert code == 0 and json.loads(out) == []
