"""A rate deck replaced while calls are live: the running calls keep the price they started
with, the next call gets the new one. The real daemon (SQL, Redis, AMI, FastAGI) against
the simulated Asterisk; the deck is replaced in SQL and the daemon's catalog reloaded."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from balance.rated_calls import RatedCallWriter
from daemon.simulator.asterisk import CallOutcome, CallPlan, SimulatedAsterisk
from storage.decks import DeckStore
from tariffs.deck import Rate
from tests.support.daemon_harness import (
    DECK,
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

OLD_PER_SECOND, NEW_PER_SECOND = 10_000, 20_000  # micro-units: 0.60/min and 1.20/min, 1/1
NEW_RATES = [Rate("1", "North America", Decimal("1.20"), Decimal(0), 1, 1, 0)]


async def test_given_live_calls_when_the_deck_is_replaced_then_they_keep_their_price(
    sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    account = f"swap-{unique_switch_id()}"
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=sim.ami_port
    )
    await provision(settings, {account: Decimal("100")})
    try:
        async with running_daemon(settings) as daemon:
            sim.fastagi_port = daemon.fastagi_port
            assert daemon.sessions and daemon.service and daemon.live and daemon.resources
            sessions, live = daemon.sessions, daemon.live
            # A talks through the swap; B is authorized and still ringing at the swap
            talking = asyncio.create_task(
                sim.place_call(CallPlan(account, "200", "15550000001", 0.0, 1.5))
            )
            ringing: asyncio.Task[CallOutcome] | None = None

            async def a_talks_and_b_is_authorized() -> bool:
                nonlocal ringing
                answered = [s for s in sessions.live_sessions() if s.state == "answered"]
                if not answered:
                    return False
                if ringing is None:
                    ringing = asyncio.create_task(
                        sim.place_call(CallPlan(account, "201", "15550000002", 1.0, 0.3))
                    )
                snap = await live.snapshot(account)
                return snap is not None and len(snap.calls) == 2

            await eventually(a_talks_and_b_is_authorized, within=10)
            store = DeckStore(daemon.resources.engine)
            await store.replace(DECK, NEW_RATES)
            assert await daemon.service.catalog.reload(store, DECK.name) == [DECK.name]
            (live_a,) = [s for s in sessions.live_sessions() if s.state == "answered"]
            assert live_a.priced is not None and live_a.priced.rate.rate == Decimal("0.60")

            assert ringing is not None
            first, second = await asyncio.gather(talking, ringing)
            after = await sim.place_call(CallPlan(account, "202", "15550000003", 0.0, 0.5))
            assert daemon.settler is not None
            writer = RatedCallWriter(daemon.resources.engine)
            await eventually(lambda: _count(writer, account, 3), within=10)
            rated = {r.callee: r for r in await writer.list(account)}
    finally:
        await sim.stop()

    assert all(o.answered for o in (first, second, after))
    old_a, old_b, new_c = (rated[f"1555000000{i}"] for i in (1, 2, 3))
    assert (old_a.rate_micros, old_b.rate_micros, new_c.rate_micros) == (
        600_000,
        600_000,
        1_200_000,
    )
    for record, per_second in ((old_a, OLD_PER_SECOND), (old_b, OLD_PER_SECOND),
                               (new_c, NEW_PER_SECOND)):  # fmt: skip
        assert record.billable_seconds > 0
        assert record.cost_micros == record.billable_seconds * per_second


async def _count(writer: RatedCallWriter, account: str, expected: int) -> bool:
    return await writer.count(account) >= expected
