"""I1 in real time: concurrent calls drain one prepaid balance, the daemon cuts them over
AMI, reservations never exceed the credit, and each call overruns by at most one increment.
A simulated Asterisk speaks real AMI and FastAGI to the real daemon."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from balance.ledger import Ledger
from balance.live import LiveState
from daemon.app import open_resources
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from daemon.simulator.loadgen import run_calls
from tests.support.daemon_harness import make_settings, provision, running_daemon, unique_switch_id

RATE_PER_SECOND_MICROS = 10_000  # the harness deck: 0.60/min, 1/1 increments


async def test_given_small_balance_when_calls_share_it_then_cut_within_one_increment(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"cut-{unique_switch_id()}"
    balance = Decimal("0.05")  # five seconds of talk in all
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=sim.ami_port
    )
    await provision(settings, {account: balance})
    samples: list[tuple[int, int]] = []
    try:
        async with running_daemon(settings) as daemon:
            sim.fastagi_port = daemon.fastagi_port
            assert daemon.live is not None
            live = daemon.live
            plans = [
                CallPlan(account, f"1555000010{i}", f"1555100010{i}", 0.05, 20.0) for i in range(3)
            ]
            calls = asyncio.create_task(run_calls(sim, plans, cps=100))
            while not calls.done():
                snap = await live.snapshot(account)
                if snap is not None:
                    samples.append((snap.reserved_micros, snap.balance_micros))
                await asyncio.sleep(0.05)
            outcomes = await calls
            assert daemon.settler is not None
            await asyncio.sleep(2.5)  # translator grace for late CDRs
            await daemon.settler.wait_idle()
    finally:
        await sim.stop()

    assert all(o.authorized for o in outcomes)
    # the daemon, not the 20 s script, ended them
    assert sum(o.cut_by_daemon for o in outcomes) >= 1
    assert all(o.billsec < 10 for o in outcomes)
    # I1: never more reserved than balance + credit limit (prepaid: 0)
    # I1: while no call has ended, never more reserved than balance + credit limit (0);
    # afterwards a settled call may have overrun its reservation by one increment, which
    # the balance then carries: the excess is bounded by one increment per call.
    initial = int(balance * 1_000_000)
    assert samples
    assert all(reserved <= bal for reserved, bal in samples if bal == initial)
    assert all(reserved <= bal + len(plans) * RATE_PER_SECOND_MICROS for reserved, bal in samples)
    res = await open_resources(settings, migrate=False)
    try:
        final = await Ledger(res.engine).balance_micros(account)
        hot = await LiveState(res.redis, batch=False).snapshot(account)
    finally:
        await res.close()
    # each call may overrun by at most one increment (1 s at 0.01)
    assert final >= -len(plans) * RATE_PER_SECOND_MICROS
    assert final < int(balance * 1_000_000)
    assert hot is not None and hot.balance_micros == final and hot.reserved_micros == 0
