"""``ratekeeper rerate`` against real SQLite and Redis: a corrected deck, run twice, bad dates."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from balance.live import LiveState
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from daemon.cli import app
from storage.engine import make_engine

HEADER = "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
NOV_30_NOON_US = 1_796_040_000_000_000  # 2026-11-30T12:00:00Z
DEC_1_US = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z


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


def _deck(tmp_path: Path, per_minute: str) -> str:
    path = tmp_path / f"retail-{per_minute}.csv"
    path.write_text(f"{HEADER}44,United Kingdom,{per_minute},0,30,6\n")
    return str(path)


def _call(account: str, n: int, started_at_us: int) -> RatedCallRecord:
    """45 s to the UK at 0.12/min, 30/6: 48 s billed, 0.096."""
    return RatedCallRecord(
        switch_id="pbx-1",
        call_id=f"{account}-{n}",
        account_id=account,
        caller="1001",
        callee="442071234567",
        started_at_us=started_at_us,
        answered_at_us=started_at_us + 1_000_000,
        ended_at_us=started_at_us + 46_000_000,
        billsec_us=45_000_000,
        billable_seconds=48,
        cost_micros=96_000,
        currency="USD",
        deck="retail",
        prefix="44",
        destination="United Kingdom",
        rate_micros=120_000,
        disposition="ANSWERED",
        cause="16",
    )


async def _settle_calls(tmp_path: Path, redis_url: str, records: list[RatedCallRecord]) -> None:
    """What the daemon does when the calls end: rated calls in SQL, debits in Redis."""
    engine = make_engine(f"sqlite:///{tmp_path / 'rk.db'}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert all(await RatedCallWriter(engine).write(records))
        live = LiveState(redis, batch=False)
        for record in records:
            await live.settle(record.account_id, record.call_id, record.cost_micros)
    finally:
        await redis.aclose()
        await engine.dispose()


async def _live_balance(redis_url: str, account: str) -> Decimal:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        snapshot = await LiveState(redis, batch=False).snapshot(account)
    finally:
        await redis.aclose()
    assert snapshot is not None
    return Decimal(snapshot.balance_micros) / 1_000_000


@pytest.fixture
def account(config: Path, tmp_path: Path, redis_url: str) -> str:
    """An account topped up with 10.00 and two calls in November rated at 0.12/min."""
    account = f"rr-cli-{uuid.uuid4().hex[:8]}"
    assert run(config, "db", "upgrade")[0] == 0
    assert run(config, "rates", "import", _deck(tmp_path, "0.12"), "--deck", "retail")[0] == 0
    assert run(config, "accounts", "create", account, "--deck", "retail")[0] == 0
    assert run(config, "topup", account, "10", "--idempotency-key", f"t-{account}")[0] == 0
    starts = (NOV_30_NOON_US - 20 * 86_400_000_000, NOV_30_NOON_US, DEC_1_US)
    calls = [_call(account, n, start) for n, start in enumerate(starts)]
    asyncio.run(_settle_calls(tmp_path, redis_url, calls))
    return account


def _balance(config: Path, account: str) -> str:
    code, out = run(config, "accounts", "show", account, "--json")
    assert code == 0, out
    return str(json.loads(out)[0]["balance"])


def test_given_corrected_deck_when_rerated_twice_then_difference_posted_once(
    config: Path, tmp_path: Path, redis_url: str, account: str
) -> None:
    assert _balance(config, account) == "9.712000"  # 10 - 3 x 0.096
    assert run(config, "rates", "import", _deck(tmp_path, "0.15"), "--deck", "retail")[0] == 0
    window = ["rerate", "--from", "2026-11-01", "--to", "2026-11-30"]  # Nov 30 included

    code, out = run(config, *window, "--dry-run", "--json")
    assert code == 0, out
    dry = json.loads(out)
    assert dry["dry_run"] and dry["changed"] == 2 and _balance(config, account) == "9.712000"

    code, out = run(config, *window, "--account", account, "--deck", "retail", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["examined"], report["changed"], report["to"]) == (
        2,
        2,
        "2026-12-01T00:00:00+00:00",
    )
    assert report["differences"] == [
        {"account": account, "currency": "USD", "calls": 2, "difference": "0.048000"}
    ]
    assert _balance(config, account) == "9.664000"  # the December call is not rerated
    assert asyncio.run(_live_balance(redis_url, account)) == Decimal("9.664")

    # the table, nothing left to change; --config also accepted after the command
    result = CliRunner().invoke(app, [*window, "--config", str(config)])
    code, out = result.exit_code, result.output
    assert code == 0, out
    assert "rerate" in out and "no differences" in out
    assert _balance(config, account) == "9.664000"


def _usage_error(config: Path, since: str, until: str) -> str:
    """The usage error's text, unwrapped from its box (exit code 2)."""
    code, out = run(config, "rerate", "--from", since, "--to", until)
    assert code == 2, out
    return " ".join(out.replace("│", " ").split())


def test_given_bad_dates_when_rerated_then_option_named(config: Path) -> None:
    assert "Invalid value for '--from': not an ISO date" in _usage_error(
        config, "2026-13-01", "2026-11-30"
    )
    assert "Invalid value for '--to'" in _usage_error(config, "2026-11-01", "soon")
    error = _usage_error(config, "2026-11-30T10:00", "2026-11-30T10:00+00:00")
    assert "'--from' / '--to'" in error and "must be before" in error


def test_given_unknown_account_or_deck_when_rerated_then_refused(
    config: Path, account: str
) -> None:
    window = ["rerate", "--from", "2026-11-01", "--to", "2026-12-01"]
    code, out = run(config, *window, "--account", "nobody")
    assert code == 1 and "unknown account" in out
    code, out = run(config, *window, "--deck", "nope")
    assert code == 1 and "unknown deck" in out
