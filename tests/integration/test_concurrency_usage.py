"""Concurrency-package usage from real rated calls: SQL on both backends, the CLI, and a
recorded Asterisk stream replayed through the real daemon."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
import typer
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from balance.accounts import Account, AccountStore
from balance.concurrency_usage import concurrency_usage, month_usage
from balance.rated_calls import RatedCallRecord, RatedCallWriter
from daemon.app import open_resources
from daemon.cli import root
from daemon.cli_usage import usage_app
from daemon.settings import load_settings
from tariffs.concurrency import ConcurrencyError, to_us
from tests.support.ami_replay import AMIReplayServer
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

S = 1_000_000
NY = "America/New_York"
# 2026-11 in New York: from 2026-11-01 00:00 EDT (04:00 UTC) to 2026-12-01 00:00 EST (05:00 UTC)
P0 = to_us(datetime(2026, 11, 1, 4, 0, tzinfo=UTC))
P_END = to_us(datetime(2026, 12, 1, 5, 0, tzinfo=UTC))
NOV15 = to_us(datetime(2026, 11, 15, 12, 0, tzinfo=UTC))
NOV20 = to_us(datetime(2026, 11, 20, 5, 0, tzinfo=UTC))  # 2026-11-20 00:00 EST


def rated(
    account: str, name: str, answered: int | None, ended: int, started: int | None = None
) -> RatedCallRecord:
    start = started if started is not None else answered if answered is not None else ended
    billsec = 0 if answered is None else ended - answered
    return RatedCallRecord(
        switch_id="pbx-1",
        call_id=f"{account}-{name}",
        account_id=account,
        caller="1001",
        callee="12125550100",
        started_at_us=start,
        answered_at_us=answered,
        ended_at_us=ended,
        billsec_us=billsec,
        billable_seconds=-(-billsec // S),
        cost_micros=0,
        currency="USD",
        deck="retail",
        prefix="1",
        destination="USA",
        rate_micros=0,
        disposition="ANSWER" if answered is not None else "NO ANSWER",
        cause="16",
    )


def november_calls(account: str, other: str) -> list[RatedCallRecord]:
    """Hand-made calls around the edges of 2026-11 (New York)."""
    return [
        rated(account, "c1", P0 - 60 * S, P0 + 60 * S),  # across the period start: 60 s in
        rated(account, "c2", P0 + 30 * S, P0 + 90 * S),
        rated(account, "c3", P0 + 45 * S, P0 + 75 * S),
        rated(account, "c4", None, P0 + 100 * S, started=P0 + 10 * S),  # not answered
        rated(other, "c5", P0 + 40 * S, P0 + 50 * S),  # another account
        rated(account, "c6", P0 - 200 * S, P0 - 100 * S),  # before the period
        rated(account, "c7", P_END - 30 * S, P_END + 30 * S),  # across its end: 30 s in
        rated(account, "c8", NOV15, NOV15 + 600 * S),
        rated(account, "c9", NOV15 + 300 * S + 1, NOV15 + 1200 * S),  # 299.999999 s with c8
        rated(account, "c10", P_END + 10 * S, P_END + 20 * S),  # after the period
        # two calls together across the local midnight of 19 -> 20 November: 60 s each side
        rated(account, "c11", NOV20 - 60 * S, NOV20 + 60 * S),
        rated(account, "c12", NOV20 - 60 * S, NOV20 + 60 * S),
    ]


async def new_accounts(engine: AsyncEngine) -> tuple[str, str]:
    store = AccountStore(engine)
    ids = (f"conc-{uuid.uuid4().hex[:10]}", f"conc-{uuid.uuid4().hex[:10]}")
    for account_id in ids:
        await store.create(Account(id=account_id, timezone=NY))
    return ids


# n(t) of the account near the period start (c1, c2, c3 clipped to P0):
#   P0+0..30 s: 1, 30..45 s: 2, 45..60 s: 3, 60..75 s: 2, 75..90 s: 1
# on 15 November: c8 and c9 overlap [12:05:00.000001, 12:10:00) = 299.999999 s;
# c11 and c12: 2 calls for 120 s across a local midnight.
@pytest.mark.parametrize(
    ("package", "overage_us", "cost"),
    [
        # every channel-second: 60 + 60 + 30 (c1-c3) + 600 + 899.999999 (c8, c9) + 30 (c7)
        # + 2 * 120 (c11, c12)
        (0, 1_919_999_999, Decimal("0.640000")),  # 31.99999998 min * 0.02, rounded up
        # above 1: 15 + 2*15 + 15 = 60 s, plus the c8/c9 overlap, plus 120 s (c11/c12)
        (1, 479_999_999, Decimal("0.160000")),  # 7.99999998 min * 0.02 = 0.15999999967 up
        (2, 15 * S, Decimal("0.005000")),  # 45..60 s only
        (3, 0, Decimal("0.000000")),
    ],
)
async def test_given_hand_made_calls_when_month_measured_then_overage_and_peaks_exact(
    sql_engine: AsyncEngine, package: int, overage_us: int, cost: Decimal
) -> None:
    account, other = await new_accounts(sql_engine)
    await RatedCallWriter(sql_engine).write(november_calls(account, other))

    usage = await month_usage(
        sql_engine,
        account,
        "2026-11",
        package=package,
        overage_price_per_minute=Decimal("0.02"),
        tz=NY,
    )

    assert (usage.start_us, usage.end_us, usage.period) == (P0, P_END, "2026-11")
    assert usage.calls == 8  # c1, c2, c3, c7, c8, c9, c11, c12
    assert usage.peak == 3
    assert usage.overage_us == overage_us
    assert usage.overage_seconds == Decimal(overage_us) / S
    assert usage.overage_cost == cost
    assert usage.overage_cost_micros == int(cost * S)
    assert len(usage.daily_peaks) == 30  # every local day of November
    busy = {day: n for day, n in usage.daily_peaks.items() if n}
    # c7 ends the month locally: 2026-11-30 23:59:30 EST
    assert busy == {
        date(2026, 11, 1): 3,
        date(2026, 11, 15): 2,
        date(2026, 11, 19): 2,
        date(2026, 11, 20): 2,
        date(2026, 11, 30): 1,
    }


async def test_given_window_inside_a_day_when_measured_then_clipped_to_it(
    sql_engine: AsyncEngine,
) -> None:
    account, other = await new_accounts(sql_engine)
    await RatedCallWriter(sql_engine).write(november_calls(account, other))

    usage = await concurrency_usage(
        sql_engine,
        account,
        P0 + 40 * S,
        P0 + 50 * S,
        package=1,
        overage_price_per_minute=Decimal("0"),
        tz=NY,
    )
    # 40..45 s: 2 calls (1 above), 45..50 s: 3 calls (2 above) -> 5 + 10 = 15 s
    assert (usage.overage_us, usage.peak, usage.calls) == (15 * S, 3, 3)
    assert dict(usage.daily_peaks) == {date(2026, 11, 1): 3}
    assert usage.period is None

    # the account's other neighbour is measured on its own: one 10 s call
    alone = await concurrency_usage(
        sql_engine, other, P0, P_END, package=0, overage_price_per_minute=Decimal("1"), tz=NY
    )
    assert (alone.overage_us, alone.peak, alone.overage_cost) == (10 * S, 1, Decimal("0.166667"))


async def test_given_bad_inputs_when_measured_then_refused_naming_them(
    sql_engine: AsyncEngine,
) -> None:
    account, _other = await new_accounts(sql_engine)
    price = Decimal("0.01")
    with pytest.raises(ConcurrencyError, match="package must be >= 0"):
        await concurrency_usage(
            sql_engine, account, P0, P_END, package=-1, overage_price_per_minute=price, tz=NY
        )
    with pytest.raises(ConcurrencyError, match="empty period"):
        await concurrency_usage(
            sql_engine, account, P0, P0, package=1, overage_price_per_minute=price, tz=NY
        )
    with pytest.raises(ConcurrencyError, match="unknown time zone 'Nowhere/Land'"):
        await month_usage(
            sql_engine,
            account,
            "2026-11",
            package=1,
            overage_price_per_minute=Decimal(1),
            tz="Nowhere/Land",
        )


# --- the CLI ---------------------------------------------------------------------------


def cli() -> typer.Typer:
    """The root callback of ``ratekeeper`` with the ``usage`` sub-app registered."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(root)
    app.add_typer(usage_app, name="usage")
    return app


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Undo the CLI's logging setup: its handler writes to the runner's closed stream."""
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    config = structlog.get_config()
    yield
    root_logger.handlers[:] = handlers
    root_logger.setLevel(level)
    structlog.configure(**config)


@pytest.mark.usefixtures("restored_logging")
async def test_given_calls_when_cli_reports_month_then_json_and_table_match(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "ratekeeper.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[database]\nurl = "{sql_url}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
    )
    res = await open_resources(load_settings(config))  # migrates the empty database
    try:
        account, other = await new_accounts(res.engine)
        await RatedCallWriter(res.engine).write(november_calls(account, other))
    finally:
        await res.close()

    async def run(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(
            CliRunner().invoke, cli(), ["--config", str(config), "usage", "concurrency", *args]
        )
        return result.exit_code, result.output

    code, out = await run(
        account, "--period", "2026-11", "--package", "1", "--overage-rate", "0.02", "--json"
    )
    assert code == 0, out
    [row] = json.loads(out)
    assert row["peak"] == 3 and row["calls"] == 8 and row["tz"] == NY
    assert (row["overage_seconds"], row["overage_us"]) == ("479.999999", 479_999_999)
    assert (row["overage_cost"], row["overage_cost_micros"]) == ("0.160000", 160_000)
    assert row["from"] == "2026-11-01T00:00:00-04:00" and row["to"] == "2026-12-01T00:00:00-05:00"
    assert row["daily_peaks"]["2026-11-15"] == 2 and len(row["daily_peaks"]) == 30

    # a local day as --from/--to (a date --to includes the day), in the account's zone
    code, out = await run(account, "--from", "2026-11-15", "--to", "2026-11-15", "--json")
    assert code == 0, out
    [row] = json.loads(out)
    assert row["daily_peaks"] == {"2026-11-15": 2}
    assert row["overage_seconds"] == "1499.999999"  # package 0: c8 + c9

    code, out = await run(account, "--period", "2026-11", "--package", "2")
    assert code == 0, out
    assert "15.000000 channel-seconds above 2" in out

    code, out = await run(account, "--from", "2026-11-05", "--to", "2026-11-04T23:00")
    assert code == 1 and "--to '2026-11-04T23:00' is not after --from '2026-11-05'" in out
    code, out = await run(account, "--period", "2026-11", "--from", "2026-11-01")
    assert code == 2 and "not both" in out
    code, out = await run(account, "--period", "2026-11", "--overage-rate", "-1")
    assert code == 2 and "--overage-rate" in out
    code, out = await run("ghost", "--period", "2026-11")
    assert code == 1 and "unknown account: 'ghost'" in out
    code, out = await run(account, "--period", "2026-13")
    assert code == 1 and "2026-13" in out


# --- a recorded stream through the real daemon -----------------------------------------

# core_show_channels.json, tenant-a's two calls (answer_ts / end_ts, to the microsecond):
#   1795630771.74: answered 1795630771.925075, ended 1795630781.928072 (10.002997 s)
#   1795630772.82: answered 1795630772.325282, ended 1795630782.334899 (10.009617 s)
# overlap: [1795630772.325282, 1795630781.928072) = 9.602790 s
TENANT_A_CALLS_US = 10_002_997 + 10_009_617
TENANT_A_OVERLAP_US = 1_795_630_781_928_072 - 1_795_630_772_325_282  # 9_602_790
# tenant-b's one call (1795630772.78): 1795630772.124296 -> 1795630782.134241
TENANT_B_CALL_US = 1_795_630_782_134_241 - 1_795_630_772_124_296  # 10_009_945


async def test_given_core_show_channels_replayed_when_measured_then_overlap_exact(
    sql_url: str, redis_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    assert TENANT_A_OVERLAP_US == 9_602_790
    recording = fixtures_dir / "asterisk" / "core_show_channels"
    facts = json.loads(recording.with_suffix(".json").read_text())["billing_facts"]
    server = AMIReplayServer([recording.with_suffix(".ami").read_bytes()], keep_open=False)
    port = await server.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=port
    )
    await provision(settings, {"tenant-a": Decimal("100"), "tenant-b": Decimal("100")})
    try:
        async with running_daemon(settings) as daemon:
            settler = daemon.settler
            assert settler is not None

            async def all_settled() -> bool:
                await settler.wait_idle()
                return settler.written >= len(facts)

            await eventually(all_settled)
    finally:
        await server.close()

    res = await open_resources(settings, migrate=False)
    try:

        async def measure(account: str, package: int) -> tuple[int, int, int]:
            usage = await month_usage(
                res.engine,
                account,
                "2026-11",
                package=package,
                overage_price_per_minute=Decimal("0.01"),
                tz="UTC",
            )
            assert usage.daily_peaks[date(2026, 11, 25)] == usage.peak
            return usage.peak, usage.overage_us, usage.overage_cost_micros

        # package 1: exactly the overlap; 0.0016004650 per 0.01/min rounded up
        assert await measure("tenant-a", 1) == (2, TENANT_A_OVERLAP_US, 1_601)
        assert await measure("tenant-a", 0) == (2, TENANT_A_CALLS_US, 3_336)  # 0.00333544 up
        assert await measure("tenant-a", 2) == (2, 0, 0)
        assert await measure("tenant-b", 0) == (1, TENANT_B_CALL_US, 1_669)  # 0.0016683 up
        assert await measure("tenant-b", 1) == (1, 0, 0)
    finally:
        await res.close()
