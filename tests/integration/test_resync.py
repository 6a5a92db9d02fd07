"""Resync on reconnect (Asterisk): the daemon lists the switch's channels and reconciles.

A simulated Asterisk drops the AMI connection mid-call (its calls go on, their events are
lost): a call that ended during the gap is billed up to the disconnect and its
reservation released; a call that started during the gap (authorized over FastAGI
meanwhile) is adopted on reconnect and rated once when it ends. With policy ``cut`` an
untracked call is hung up instead.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from daemon.app import Daemon
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from storage.tables import rated_calls
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)


async def _rated(daemon: Daemon, account: str) -> list[dict[str, object]]:
    assert daemon.resources is not None
    async with daemon.resources.engine.connect() as conn:
        rows = await conn.execute(select(rated_calls).where(rated_calls.c.account_id == account))
        return [dict(row._mapping) for row in rows]


def _connected(daemon: Daemon) -> bool:
    return all(c.connected for c in daemon.connectors)


async def test_given_call_ending_while_disconnected_when_reconnected_then_billed_up_to_the_gap(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"gap-{unique_switch_id()}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=sim.ami_port
    )
    await provision(settings, {account: Decimal("10")})
    try:
        async with running_daemon(settings) as daemon:
            sim.fastagi_port = daemon.fastagi_port
            await eventually(lambda: _connected(daemon))
            assert daemon.sessions is not None and daemon.live is not None
            sessions, live = daemon.sessions, daemon.live
            call = asyncio.create_task(
                sim.place_call(CallPlan(account, "15550000001", "15551000001", 0.05, 1.5))
            )
            await eventually(lambda: any(s.state == "answered" for s in sessions.live_sessions()))
            await sim.server.stop()  # the switch is unreachable; the call goes on
            await asyncio.sleep(0.3)
            outcome = await call  # ... and ends during the gap
            assert sessions.live_sessions()  # nobody told the daemon
            port_holder = sim.server
            port_holder._port = settings.switches[0].port  # same port again
            await port_holder.start()
            await eventually(lambda: not sessions.live_sessions())
            assert daemon.settler is not None
            await daemon.settler.wait_idle()
            rows = await _rated(daemon, account)
            snap = await live.snapshot(account)
    finally:
        await sim.stop()

    assert outcome.answered and outcome.billsec > Decimal("1")
    assert len(rows) == 1
    row = rows[0]
    assert row["call_id"] == outcome.linkedid
    # billed up to the disconnect (~0.3 s after answer), not the 1.5 s the call lasted
    assert 0 < row["billsec_us"] < int(outcome.billsec * 1_000_000)
    assert row["cost_micros"] > 0
    assert snap is not None and snap.reserved_micros == 0 and not snap.calls


async def test_given_call_started_while_disconnected_when_reconnected_then_adopted_and_rated_once(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"adopt-{unique_switch_id()}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=sim.ami_port
    )
    await provision(settings, {account: Decimal("10")})
    try:
        async with running_daemon(settings) as daemon:
            sim.fastagi_port = daemon.fastagi_port
            await eventually(lambda: _connected(daemon))
            assert daemon.sessions is not None and daemon.live is not None
            sessions, live = daemon.sessions, daemon.live
            port = sim.ami_port
            await sim.server.stop()
            await eventually(lambda: not _connected(daemon))
            call = asyncio.create_task(
                sim.place_call(CallPlan(account, "15550000002", "15551000002", 0.05, 2.5))
            )
            await eventually(lambda: any(ch.bridge_id for ch, _ in sim.channels.values()))
            sim.server._port = port
            await sim.server.start()
            await eventually(lambda: any(s.state == "answered" for s in sessions.live_sessions()))
            adopted = sessions.live_sessions()[0]
            outcome = await call
            await eventually(lambda: not sessions.live_sessions())
            assert daemon.settler is not None
            await daemon.settler.wait_idle()
            rows = await _rated(daemon, account)
            snap = await live.snapshot(account)
    finally:
        await sim.stop()

    assert outcome.authorized and outcome.answered
    assert adopted.call_id == outcome.linkedid
    assert adopted.reservation_key.endswith(outcome.a_leg_uniqueid)  # found the AGI's one
    assert len(rows) == 1
    # the Cdr's BillableSeconds (whole seconds) stands in for the missed answer time
    assert rows[0]["billsec_us"] == int(outcome.billsec) * 1_000_000
    assert snap is not None and snap.reserved_micros == 0 and not snap.calls


async def test_given_cut_policy_when_untracked_call_found_then_hung_up(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"cutp-{unique_switch_id()}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    base = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=sim.ami_port
    )
    switch = base.switches[0].model_copy(update={"untracked_calls": "cut"})
    settings = base.model_copy(update={"switches": [switch]})
    await provision(settings, {account: Decimal("10")})
    try:
        port = sim.ami_port
        await sim.server.stop()
        sim.fastagi_port = 9  # no daemon yet: the call skips authorization
        call = asyncio.create_task(
            sim.place_call(
                CallPlan(account, "15550000003", "15551000003", 0.05, 30.0, authorize=False)
            )
        )
        await eventually(lambda: any(ch.bridge_id for ch, _ in sim.channels.values()))
        sim.server._port = port
        await sim.server.start()
        async with running_daemon(settings) as daemon:
            outcome = await asyncio.wait_for(call, 10)
            sessions = daemon.sessions
            assert sessions is not None
            await eventually(lambda: not sessions.live_sessions())
            assert daemon.settler is not None
            await daemon.settler.wait_idle()
            rows = await _rated(daemon, account)
    finally:
        await sim.stop()

    assert outcome.cut_by_daemon and outcome.billsec < 30
    assert len(rows) == 1 and rows[0]["call_id"] == outcome.linkedid
