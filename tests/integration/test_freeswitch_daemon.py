"""The real daemon with a simulated FreeSWITCH over real ESL and real xml_curl HTTP.

Park authorization (continue with uuid_transfer / kill with the reason's cause), the
debit-loop cut with uuid_kill, the switch-side limit that bounds a call once the daemon
is gone, resync after an ESL outage (a call ending in the gap, a call starting in it), and
mixed Asterisk + FreeSWITCH traffic sharing one balance and one concurrency limit (I1).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Literal

import structlog.testing
from sqlalchemy import select

from balance.ledger import Ledger
from daemon.app import Daemon
from daemon.demo import local_freeswitch
from daemon.sessions import SessionManager
from daemon.settings import Settings
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from daemon.simulator.freeswitch import SimulatedFreeSWITCH
from daemon.simulator.loadgen import run_calls
from storage.tables import rated_calls
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

PASSWORD = "fs-test-secret"
INCREMENT_MICROS = 10_000  # the harness deck: 0.60/min in 1 s increments


def _settings(
    tmp: Path,
    sql_url: str,
    redis_url: str,
    fs_id: str,
    esl_port: int,
    *,
    park: bool = False,
    ami_port: int | None = None,
) -> Settings:
    base = make_settings(
        tmp, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=ami_port or 1
    )
    fs = local_freeswitch(
        fs_id,
        esl_port,
        PASSWORD,
        ping_interval=30,
        reconnect_min=0.05,
        reconnect_max=0.2,
        park_contexts=("authhold",) if park else (),
    )
    switches = [*base.switches, fs] if ami_port is not None else [fs]
    return base.model_copy(update={"switches": switches})


@asynccontextmanager
async def _freeswitch(
    fs_id: str, mode: Literal["xml_curl", "park", "none"] = "xml_curl"
) -> AsyncIterator[SimulatedFreeSWITCH]:
    sim = SimulatedFreeSWITCH(
        esl_password=PASSWORD, xml_curl_url="http://127.0.0.1:9/", switch_name=fs_id, auth_mode=mode
    )
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def _point(sim: SimulatedFreeSWITCH, daemon: Daemon, fs_id: str) -> None:
    sim.xml_curl_url = (
        f"http://127.0.0.1:{daemon.http_port}/v1/freeswitch/dialplan?switch_id={fs_id}"
    )


def _ms_of(billsec_us: object, exact: Decimal) -> bool:
    """True when a rated billsec is the exact talk time in whole milliseconds (+-1 ms)."""
    us = int(str(billsec_us))
    return us % 1000 == 0 and abs(us - exact * 1_000_000) <= 1000


def _answered(sessions: SessionManager) -> bool:
    return any(s.state == "answered" for s in sessions.live_sessions())


def _idle(daemon: Daemon) -> bool:
    return daemon.sessions is not None and not daemon.sessions.live_sessions()


def _connected(daemon: Daemon) -> bool:
    return all(c.connected for c in daemon.connectors)


async def _rows(daemon: Daemon, account: str) -> list[dict[str, object]]:
    assert daemon.resources is not None and daemon.settler is not None
    await daemon.settler.wait_idle()
    async with daemon.resources.engine.connect() as conn:
        result = await conn.execute(select(rated_calls).where(rated_calls.c.account_id == account))
        return [dict(row._mapping) for row in result]


async def test_given_parked_calls_when_authorized_over_esl_then_continued_or_killed(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    rich, poor = f"rich-{fs_id}", f"poor-{fs_id}"
    async with _freeswitch(fs_id, "park") as sim:
        settings = _settings(tmp_path, sql_url, redis_url, fs_id, sim.esl_port, park=True)
        await provision(settings, {rich: Decimal("10"), poor: Decimal("0")})
        async with running_daemon(settings) as daemon:
            await eventually(lambda: _connected(daemon))
            allowed, denied = await asyncio.gather(
                sim.place_call(CallPlan(rich, "15550001001", "15551001001", 0.1, 1.0)),
                sim.place_call(CallPlan(poor, "15550001002", "15551001002", 0.1, 1.0)),
            )
            await eventually(lambda: _idle(daemon))
            rich_rows, poor_rows = await _rows(daemon, rich), await _rows(daemon, poor)

    assert allowed.answered and not allowed.cut_by_daemon
    assert not denied.answered and denied.cut_by_daemon and denied.reason == "CALL_REJECTED"
    assert [r["call_id"] for r in rich_rows] == [allowed.linkedid]
    # FreeSWITCH's own billmsec: the talk time in whole milliseconds (from ms timestamps)
    assert _ms_of(rich_rows[0]["billsec_us"], allowed.billsec)
    assert [r["cost_micros"] for r in poor_rows] == [0]  # rated, never answered


async def test_given_shared_small_balance_when_freeswitch_calls_talk_then_uuid_kill_cuts_them(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    account = f"short-{fs_id}"
    async with _freeswitch(fs_id) as sim:
        settings = _settings(tmp_path, sql_url, redis_url, fs_id, sim.esl_port)
        # five seconds of talk in all: each call's own switch-side limit (~5 s) is longer
        # than its share, so the daemon's debit loop must cut them
        await provision(settings, {account: Decimal("0.05")})
        async with running_daemon(settings) as daemon:
            await eventually(lambda: _connected(daemon))
            _point(sim, daemon, fs_id)
            plans = [
                CallPlan(account, f"1555000200{i}", f"1555100200{i}", 0.1, 20) for i in range(2)
            ]
            outcomes = await run_calls(sim, plans, cps=100)
            await eventually(lambda: _idle(daemon))
            rows = await _rows(daemon, account)
            assert daemon.resources is not None
            balance = await Ledger(daemon.resources.engine).balance_micros(account)

    assert all(o.authorized and o.answered for o in outcomes)
    assert all(o.cut_by_daemon and not o.limited_by_switch for o in outcomes)
    assert all(o.billsec < 5 for o in outcomes)
    assert len(rows) == 2
    # I1: each call overruns by at most one increment
    assert -2 * INCREMENT_MICROS <= balance < 50_000


async def test_given_daemon_gone_when_call_talks_on_then_switch_side_limit_ends_it(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    account = f"bounded-{fs_id}"
    async with _freeswitch(fs_id) as sim:
        settings = _settings(tmp_path, sql_url, redis_url, fs_id, sim.esl_port)
        await provision(settings, {account: Decimal("0.02")})  # two seconds of talk
        async with running_daemon(settings) as daemon:
            await eventually(lambda: _connected(daemon))
            _point(sim, daemon, fs_id)
            call = asyncio.create_task(
                sim.place_call(CallPlan(account, "15550003001", "15551003001", 0.0, 30))
            )
            await eventually(lambda: any(len(run.legs) > 1 for run in sim.runs))
            for connector in daemon.connectors:  # the daemon stops listening to the switch
                await connector.close()
            outcome = await asyncio.wait_for(call, 15)

    assert outcome.authorized and not outcome.cut_by_daemon
    assert outcome.limited_by_switch  # sched_hangup from the xml_curl answer
    assert outcome.billsec <= 3  # max_usage 2 s, counted from the dialplan (1 s ticks)


async def test_given_esl_outage_when_calls_end_and_start_in_the_gap_then_resync_bills_each_once(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    account = f"gap-{fs_id}"
    async with _freeswitch(fs_id) as sim:
        settings = _settings(tmp_path, sql_url, redis_url, fs_id, sim.esl_port)
        await provision(settings, {account: Decimal("10")})
        async with running_daemon(settings) as daemon:
            await eventually(lambda: _connected(daemon))
            _point(sim, daemon, fs_id)
            sessions = daemon.sessions
            assert sessions is not None and daemon.live is not None
            ending = asyncio.create_task(
                sim.place_call(CallPlan(account, "15550004001", "15551004001", 0.0, 1.0))
            )
            await eventually(lambda: any(s.state == "answered" for s in sessions.live_sessions()))
            await sim.server.stop()  # ESL unreachable; calls go on, their events are lost
            await eventually(lambda: not _connected(daemon))
            ended_in_gap = await ending
            starting = asyncio.create_task(
                sim.place_call(CallPlan(account, "15550004002", "15551004002", 0.0, 2.0))
            )
            await eventually(lambda: any(len(run.legs) > 1 for run in sim.runs))
            await sim.server.start()  # same port: the daemon reconnects and resyncs
            await eventually(lambda: _connected(daemon))
            await eventually(
                lambda: [s.call_id for s in sessions.live_sessions()] == [starting_id(sim)]
            )
            started_in_gap = await starting
            await eventually(lambda: not sessions.live_sessions())
            rows = {r["call_id"]: r for r in await _rows(daemon, account)}
            snap = await daemon.live.snapshot(account)

    assert set(rows) == {ended_in_gap.linkedid, started_in_gap.linkedid}
    gap = rows[ended_in_gap.linkedid]
    assert 0 < int(str(gap["billsec_us"])) < int(ended_in_gap.billsec * 1_000_000)
    adopted = rows[started_in_gap.linkedid]  # its HANGUP_COMPLETE carried the exact billmsec
    assert _ms_of(adopted["billsec_us"], started_in_gap.billsec)
    assert snap is not None and snap.reserved_micros == 0 and not snap.calls


def starting_id(sim: SimulatedFreeSWITCH) -> str:
    """The billing-leg uuid of the one call in progress on the simulator."""
    (run,) = sim.runs
    return run.a.uuid


async def test_given_mixed_asterisk_and_freeswitch_traffic_then_one_concurrency_limit(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    account = f"mixed-{fs_id}"
    limit = 3
    ast = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await ast.start()
    try:
        async with _freeswitch(fs_id) as fs:
            settings = _settings(
                tmp_path, sql_url, redis_url, fs_id, fs.esl_port, ami_port=ast.ami_port
            )
            await provision(settings, {account: Decimal("10")}, concurrency_limit=limit)
            async with running_daemon(settings) as daemon:
                await eventually(lambda: _connected(daemon))
                _point(fs, daemon, fs_id)
                ast.fastagi_port = daemon.fastagi_port
                plans = [
                    CallPlan(account, f"155500050{i:02d}", f"155510050{i:02d}", 0.0, 1.5)
                    for i in range(8)
                ]
                ast_out, fs_out = await asyncio.gather(
                    run_calls(ast, plans[:4], cps=500), run_calls(fs, plans[4:], cps=500)
                )
                await eventually(lambda: _idle(daemon))
                rows = await _rows(daemon, account)
                assert daemon.resources is not None
                balance = await Ledger(daemon.resources.engine).balance_micros(account)
                snap = await daemon.live.snapshot(account) if daemon.live else None
    finally:
        await ast.stop()

    outcomes = ast_out + fs_out
    allowed = [o for o in outcomes if o.authorized]
    assert len(allowed) == limit  # one limit across both switches
    assert {o.reason for o in outcomes if not o.authorized} == {"CONCURRENCY_LIMIT"}
    assert any(o.authorized for o in ast_out) or any(o.authorized for o in fs_out)
    charged = sum(int(str(r["cost_micros"])) for r in rows)
    assert balance == 10_000_000 - charged  # I4 across both switches
    assert snap is not None and snap.balance_micros == balance and snap.reserved_micros == 0


async def test_given_disconnect_notice_and_drop_mid_call_when_call_goes_on_then_rated_once(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    account = f"notice-{fs_id}"
    async with _freeswitch(fs_id) as sim:
        settings = _settings(tmp_path, sql_url, redis_url, fs_id, sim.esl_port)
        await provision(settings, {account: Decimal("10")})
        async with running_daemon(settings) as daemon:
            await eventually(lambda: _connected(daemon))
            _point(sim, daemon, fs_id)
            sessions = daemon.sessions
            assert sessions is not None
            with structlog.testing.capture_logs() as logs:
                call = asyncio.create_task(
                    sim.place_call(CallPlan(account, "15550006001", "15551006001", 0.0, 2.0))
                )
                await eventually(lambda: _answered(sessions))
                sim.server.shutdown_notice()  # mid-call: notice, then the socket closes
                await eventually(lambda: not _connected(daemon))
                await eventually(lambda: _connected(daemon))  # reconnected, call still up
                sim.server.drop_connections()  # and once more without a notice
                await eventually(lambda: not _connected(daemon))
                await eventually(lambda: _connected(daemon))
                outcome = await call
                await eventually(lambda: _idle(daemon))
            rows = await _rows(daemon, account)

    events = [entry["event"] for entry in logs]
    assert "esl.disconnect_notice" in events  # a clear line for each loss
    assert events.count("switch resynced") >= 2
    assert len(rows) == 1  # not lost, not doubled
    assert rows[0]["call_id"] == outcome.linkedid
    assert _ms_of(rows[0]["billsec_us"], outcome.billsec)  # the switch's own billmsec


async def test_given_mixed_traffic_draining_one_balance_then_reservations_bounded_and_cut(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    fs_id = unique_switch_id()
    account = f"drain-{fs_id}"
    initial = 60_000  # six seconds of talk in all, for four calls over two switches
    ast = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await ast.start()
    samples: list[tuple[int, int]] = []
    try:
        async with _freeswitch(fs_id) as fs:
            settings = _settings(
                tmp_path, sql_url, redis_url, fs_id, fs.esl_port, ami_port=ast.ami_port
            )
            await provision(settings, {account: Decimal(initial) / 1_000_000})
            async with running_daemon(settings) as daemon:
                await eventually(lambda: _connected(daemon))
                _point(fs, daemon, fs_id)
                ast.fastagi_port = daemon.fastagi_port
                assert daemon.live is not None
                live = daemon.live
                plans = [
                    CallPlan(account, f"155500070{i:02d}", f"155510070{i:02d}", 0.05, 20.0)
                    for i in range(4)
                ]
                calls = asyncio.gather(
                    run_calls(ast, plans[:2], cps=100), run_calls(fs, plans[2:], cps=100)
                )
                while not calls.done():
                    snap = await live.snapshot(account)
                    if snap is not None:
                        samples.append((snap.reserved_micros, snap.balance_micros))
                    await asyncio.sleep(0.05)
                ast_out, fs_out = await calls
                await eventually(lambda: _idle(daemon))
                rows = await _rows(daemon, account)
                assert daemon.resources is not None
                balance = await Ledger(daemon.resources.engine).balance_micros(account)
    finally:
        await ast.stop()

    outcomes = ast_out + fs_out
    assert all(o.authorized and o.answered and o.cut_by_daemon for o in outcomes)
    assert len(rows) == 4
    # I1: before any call settles, reservations never exceed the balance (prepaid);
    # each call may overrun its reservation by one increment at most
    assert samples and all(res <= bal for res, bal in samples if bal == initial)
    assert -4 * INCREMENT_MICROS <= balance < initial
