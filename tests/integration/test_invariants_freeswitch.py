"""I2 exactly once and I4 conservation for FreeSWITCH: every recorded ESL stream replayed
over TCP into the real daemon (real SQL, real Redis), twice, and across a restart. Each
call is billed once, from its billing leg, although two to six channels carry billsec."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from balance.ledger import Ledger
from balance.live import LiveState
from daemon.app import open_resources
from daemon.demo import local_freeswitch
from daemon.settings import Settings
from storage.tables import ledger_entries, rated_calls
from tests.integration.test_esl_fixtures import CASES, Case
from tests.support.daemon_harness import eventually, make_settings, provision, running_daemon
from tests.support.daemon_harness import unique_switch_id as unique_id
from tests.support.esl_replay import ESLReplayServer

PASSWORD = "ClueCon"
BALANCES = {"tenant-a": Decimal("100"), "tenant-b": Decimal("100")}
BILLED = [case for case in CASES if case.calls]


def _settings(tmp: Path, sql_url: str, redis_url: str, switch_id: str, port: int) -> Settings:
    base = make_settings(tmp, sql_url, redis_url, switch_id=switch_id, ami_port=1)
    switch = local_freeswitch(
        switch_id, port, PASSWORD, ping_interval=30, reconnect_min=0.05, reconnect_max=0.2
    )
    return base.model_copy(update={"switches": [switch]})


async def _replay(settings: Settings, server: ESLReplayServer, calls: int) -> tuple[int, int]:
    async with running_daemon(settings) as daemon:
        settler = daemon.settler
        assert settler is not None

        async def all_settled() -> bool:
            await settler.wait_idle()
            return settler.written + settler.duplicates >= calls

        await eventually(all_settled)
        await eventually(lambda: server.connections > len(server.streams))
        await asyncio.sleep(0.3)
        await settler.wait_idle()
        return settler.written, settler.duplicates


def _billing_uuids(case: Case) -> list[str]:
    return sorted(str(call["billing_leg_uuid"]) for call in case.calls)


async def _check_books(settings: Settings, case: Case) -> None:
    res = await open_resources(settings, migrate=False)
    try:
        async with res.engine.connect() as conn:
            rows = (await conn.execute(select(rated_calls))).all()
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
        facts: dict[str, Any] = {str(c["billing_leg_uuid"]): c["billing"] for c in case.calls}
        # I2: one rated call per call, keyed by its billing leg, with the leg's own facts
        assert sorted(r.call_id for r in rows) == _billing_uuids(case)
        for row in rows:
            bill = facts[row.call_id]
            assert row.account_id == bill["accountcode"]
            assert row.callee == bill["destination"]
            assert row.billsec_us == bill["billmsec"] * 1000
            assert (row.answered_at_us is not None) == bill["answered"]
        charged = [r for r in rows if r.cost_micros]
        # the harness deck rates callees starting with 1 (7000, 4102 have no rate)
        rated = [b for b in facts.values() if b["answered"] and b["destination"].startswith("1")]
        assert len(charged) == len(rated)
        by_account = {a: (n, total) for a, n, total in charges}
        assert sum(n for a, (n, _t) in by_account.items() if not a.startswith("sys:")) == len(
            charged
        )
        # I4: balance = top-ups - charges, to the micro-unit; every transaction balances
        ledger = Ledger(res.engine)
        for account, topped_up in BALANCES.items():
            spent = -by_account.get(account, (0, 0))[1]
            assert await ledger.balance_micros(account) == int(topped_up * 1_000_000) - spent
        assert await ledger.audit() == []
        live = LiveState(res.redis, batch=False)
        for account in BALANCES:
            snap = await live.snapshot(account)
            assert snap is not None
            assert snap.balance_micros == await ledger.balance_micros(account)
            assert snap.reserved_micros == 0
    finally:
        await res.close()


@pytest.mark.parametrize("case", BILLED, ids=[c.name for c in BILLED])
async def test_given_recorded_esl_stream_replayed_twice_then_each_call_rated_once(
    case: Case, sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    server = ESLReplayServer(case.streams * 2, password=PASSWORD, chunking="random")
    port = await server.start()
    settings = _settings(tmp_path, sql_url, redis_url, unique_id(), port)
    await provision(settings, BALANCES)
    try:
        await _replay(settings, server, len(case.calls))
    finally:
        await server.close()
    await _check_books(settings, case)


@pytest.mark.parametrize("case", BILLED, ids=[c.name for c in BILLED])
async def test_given_daemon_restarted_between_esl_replays_then_each_call_rated_once(
    case: Case, sql_url: str, redis_url: str, tmp_path: Path
) -> None:
    switch_id = unique_id()
    first = ESLReplayServer(list(case.streams), password=PASSWORD)
    settings = _settings(tmp_path, sql_url, redis_url, switch_id, await first.start())
    await provision(settings, BALANCES)
    try:
        await _replay(settings, first, len(case.calls))
    finally:
        await first.close()
    second = ESLReplayServer(list(case.streams), password=PASSWORD)
    settings = _settings(tmp_path, sql_url, redis_url, switch_id, await second.start())
    try:
        written, duplicates = await _replay(settings, second, len(case.calls))
    finally:
        await second.close()
    assert (written, duplicates) == (0, len(case.calls))
    await _check_books(settings, case)
