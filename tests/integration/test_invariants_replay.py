"""I2 exactly once and I4 conservation, end to end: recorded Asterisk streams replayed
over TCP into the real daemon (real SQL, real Redis), twice, and across a restart."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from balance.ledger import Ledger
from balance.rated_calls import RatedCallWriter
from daemon.app import open_resources
from daemon.settings import Settings
from storage.tables import ledger_entries, rated_calls
from tests.integration.test_ami_fixtures import CASES, Case
from tests.support.ami_replay import AMIReplayServer
from tests.support.daemon_harness import (
    eventually,
    make_settings,
    provision,
    running_daemon,
    unique_switch_id,
)

BALANCES = {"tenant-a": Decimal("100"), "tenant-b": Decimal("100")}
BILLED_CASES = [case for case in CASES if case.facts]


async def _rated_count(settings: Settings) -> int:
    res = await open_resources(settings, migrate=False)
    try:
        return await RatedCallWriter(res.engine).count()
    finally:
        await res.close()


async def _replay(settings: Settings, server: AMIReplayServer, settlements: int) -> tuple[int, int]:
    """Run a daemon until it has settled ``settlements`` ended calls (new or duplicate)."""
    async with running_daemon(settings) as daemon:
        settler = daemon.settler
        assert settler is not None

        async def all_settled() -> bool:
            await settler.wait_idle()
            return settler.written + settler.duplicates >= settlements

        await eventually(all_settled)
        # every recorded stream was sent to its end: the client came back for one more
        await eventually(lambda: server.connections > len(server.streams))
        await asyncio.sleep(0.3)
        await settler.wait_idle()
        return settler.written, settler.duplicates


async def _check_books(settings: Settings, case: Case) -> None:
    res = await open_resources(settings, migrate=False)
    try:
        async with res.engine.connect() as conn:
            rows = (
                await conn.execute(select(rated_calls.c.call_id, rated_calls.c.cost_micros))
            ).all()
            charges = (
                await conn.execute(
                    select(
                        ledger_entries.c.account_id,
                        func.count(),
                        func.sum(ledger_entries.c.amount_micros),
                    )
                    .where(ledger_entries.c.kind == "charge")
                    .group_by(ledger_entries.c.account_id)
                )
            ).all()
        ledger = Ledger(res.engine)
        # I2: one rated call per call of the recording, keyed by its Linkedid.
        assert sorted(r.call_id for r in rows) == sorted(str(f["linkedid"]) for f in case.facts)
        charged = [r for r in rows if r.cost_micros]
        by_account = {a: (n, total) for a, n, total in charges}
        # one set of ledger entries per charged call: customer side + revenue side
        assert sum(n for a, (n, _t) in by_account.items() if not a.startswith("sys:")) == len(
            charged
        )
        assert by_account.get("sys:revenue", (0, 0))[0] == len(charged)
        # I4: balance = top-ups - charges, to the micro-unit, and every transaction balances.
        for account, topped_up in BALANCES.items():
            spent = -by_account.get(account, (0, 0))[1]
            assert await ledger.balance_micros(account) == int(topped_up * 1_000_000) - spent
        assert await ledger.audit() == []
        # Redis mirrors SQL once quiet.
        from balance.live import LiveState

        live = LiveState(res.redis, batch=False)
        for account in BALANCES:
            snap = await live.snapshot(account)
            assert snap is not None
            assert snap.balance_micros == await ledger.balance_micros(account)
            assert snap.reserved_micros == 0
    finally:
        await res.close()


@pytest.mark.parametrize("case", BILLED_CASES, ids=[c.name for c in BILLED_CASES])
async def test_given_recorded_stream_replayed_twice_then_each_call_rated_once(
    case: Case, sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    server = AMIReplayServer(case.streams * 2, keep_open=False)
    port = await server.start()
    settings = make_settings(
        tmp_path, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=port
    )
    await provision(settings, BALANCES)
    try:
        await _replay(settings, server, len(case.facts))
    finally:
        await server.close()
    await _check_books(settings, case)


@pytest.mark.parametrize("case", BILLED_CASES, ids=[c.name for c in BILLED_CASES])
async def test_given_daemon_restarted_between_replays_then_each_call_rated_once(
    case: Case, sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    switch_id = unique_switch_id()
    first = AMIReplayServer(list(case.streams), keep_open=False)
    port = await first.start()
    settings = make_settings(tmp_path, sql_url, redis_url, switch_id=switch_id, ami_port=port)
    await provision(settings, BALANCES)
    try:
        await _replay(settings, first, len(case.facts))
    finally:
        await first.close()
    # a new daemon process on the same SQL and Redis sees the whole recording again
    second = AMIReplayServer(list(case.streams), keep_open=False)
    port = await second.start()
    settings = make_settings(tmp_path, sql_url, redis_url, switch_id=switch_id, ami_port=port)
    try:
        written, duplicates = await _replay(settings, second, len(case.facts))
    finally:
        await second.close()
    # the restarted daemon saw every call again and SQL's unique key refused them all
    assert (written, duplicates) == (0, len(case.facts))
    await _check_books(settings, case)
