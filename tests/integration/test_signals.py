"""Real signals to a real ``ratekeeper run`` process, as systemd sends them.

The daemon runs as a child process on a configuration file (SQL from the fixture, the
test Redis, JSON logs), with its AMI secret from a systemd credential
(``secret = "credential:..."`` read from ``$CREDENTIALS_DIRECTORY``), a notification
socket and a watchdog; a simulated Asterisk in the test process places calls over real
AMI and FastAGI. SIGHUP during live calls reloads between RELOADING=1 and READY=1 and
loses nothing: every call is rated once, with its ledger entries. SIGTERM during live
calls sends STOPPING=1, refuses new work and writes every settlement already started
(held back by a long batch delay until the drain), then exits 0. The SIGTERM run is
under the kernel's memory-deny-write-execute (PR_SET_MDWE, what the unit's
``MemoryDenyWriteExecute=yes`` enforces) when the kernel has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon.settings import Settings, load_settings
from daemon.simulator.asterisk import CallOutcome, CallPlan, SimulatedAsterisk
from daemon.simulator.loadgen import run_calls
from storage.engine import make_engine
from storage.tables import ledger_entries, rated_calls
from tests.integration.test_sd_notify import NotifyListener, listener  # noqa: F401
from tests.support.daemon_harness import provision, unique_switch_id

RATEKEEPER = Path(sys.executable).with_name("ratekeeper")
Log = dict[str, Any]
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
# Runs argv[1:] with memory-deny-write-execute in force (kept across execve).
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit('PR_SET_MDWE refused: errno %d' % ctypes.get_errno())\n"
    f"assert libc.prctl({PR_GET_MDWE}, 0, 0, 0, 0) == {PR_MDWE_REFUSE_EXEC_GAIN}\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _kernel_has_mdwe() -> bool:
    probe = [sys.executable, "-c", MDWE_EXEC, sys.executable, "-c", "pass"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


class DaemonProcess:
    """``ratekeeper --config FILE run`` as a child; its JSON log lines collected."""

    def __init__(self, config: Path, env: Mapping[str, str], *, mdwe: bool = False) -> None:
        self.config = config
        self.env = dict(env)
        self.mdwe = mdwe
        self.logs: list[Log] = []
        self._arrived = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the daemon."""
        if not RATEKEEPER.is_file():
            raise RuntimeError(f"console script not found: {RATEKEEPER} (pip install -e .)")
        command = [str(RATEKEEPER), "--config", str(self.config), "run"]
        if self.mdwe:
            command = [sys.executable, "-c", MDWE_EXEC, *command]
        self._proc = await asyncio.create_subprocess_exec(
            *command,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(), name="daemon-logs")

    def send(self, sig: signal.Signals) -> None:
        """Send a signal to the daemon."""
        assert self._proc is not None
        self._proc.send_signal(sig)

    async def exit_code(self, *, within: float = 60.0) -> int:
        """Wait for the daemon to exit (all its log lines read); its exit code."""
        assert self._proc is not None and self._reader is not None
        async with asyncio.timeout(within):
            code = await self._proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        """Kill the daemon if it still runs (a failed test)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def events(self, event: str) -> list[Log]:
        """The log lines whose event is ``event``."""
        return [line for line in self.logs if line.get("event") == event]

    async def wait_log(self, predicate: Callable[[list[Log]], bool], *, within: float = 30) -> None:
        """Wait until ``predicate(self.logs)`` holds."""
        async with asyncio.timeout(within):
            while not predicate(self.logs):
                self._arrived.clear()
                await self._arrived.wait()

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            text = raw.decode("utf-8", "replace").strip()
            try:
                line = json.loads(text)
            except ValueError:
                line = {"event": "<not json>", "text": text}
            self.logs.append(line if isinstance(line, dict) else {"event": str(line)})
            self._arrived.set()


def _write_config(
    tmp: Path, sql_url: str, redis_url: str, switch_id: str, ami_port: int, batch_delay_ms: int
) -> Path:
    config = tmp / "ratekeeper.toml"
    config.write_text(
        f"""state_dir = "{tmp}"

[database]
url = "{sql_url}"
batch_delay_ms = {batch_delay_ms}

[redis]
url = "{redis_url}"

[api]
port = 0

[authorization]
http_port = 0
fastagi_port = 0
debit_interval = 1
max_call_duration = 3600

[logging]
level = "INFO"
format = "json"

[[switches]]
id = "{switch_id}"
kind = "asterisk"
host = "127.0.0.1"
port = {ami_port}
username = "billing"
secret = "credential:ami-{switch_id}"
ping_interval = 30
reconnect_min = 0.05
reconnect_max = 0.2
""",
        encoding="utf-8",
    )
    return config


def _environment(tmp: Path, switch_id: str, notify_socket: str) -> dict[str, str]:
    """What systemd would give the service: credentials, notify socket, watchdog."""
    credentials = tmp / "credentials"
    credentials.mkdir()
    (credentials / f"ami-{switch_id}").write_text("billing\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEKEEPER_")}
    env.update(
        CREDENTIALS_DIRECTORY=str(credentials),
        NOTIFY_SOCKET=notify_socket,
        WATCHDOG_USEC="2000000",
    )
    return env


@contextlib.asynccontextmanager
async def _service(
    tmp: Path,
    sql_url: str,
    redis_url: str,
    notify: NotifyListener,
    account: str,
    *,
    batch_delay_ms: int = 5,
    mdwe: bool = False,
) -> AsyncIterator[tuple[DaemonProcess, SimulatedAsterisk, Settings]]:
    """A provisioned ``ratekeeper run`` (READY=1 seen) and its simulated Asterisk."""
    switch_id = unique_switch_id()
    sim = SimulatedAsterisk(
        ami_username="billing", ami_secret="billing", fastagi_host="127.0.0.1", fastagi_port=0
    )
    await sim.start()
    config = _write_config(tmp, sql_url, redis_url, switch_id, sim.ami_port, batch_delay_ms)
    env = _environment(tmp, switch_id, notify.address)
    settings = load_settings(config, environ=env)
    await provision(settings, {account: Decimal("100")})
    daemon = DaemonProcess(config, env, mdwe=mdwe)
    try:
        await daemon.start()
        await notify.wait_for(lambda m: m.get("READY") == "1", within=60)
        await daemon.wait_log(lambda logs: any(x["event"] == "ratekeeper started" for x in logs))
        started = daemon.events("ratekeeper started")[0]
        sim.fastagi_port = int(started["fastagi_port"])
        assert started["event_loop"] == "uvloop"  # `event_loop = "auto"`, uvloop installed
        yield daemon, sim, settings
    finally:
        await daemon.kill()
        await sim.stop()


async def _written(settings: Settings, account: str) -> dict[str, tuple[int, list[Any]]]:
    """call_id -> (cost_micros, [(ledger account, amount)]) of the account's rated calls."""
    engine = make_engine(settings.database_url())
    try:
        async with engine.connect() as conn:
            calls = (
                await conn.execute(
                    select(
                        rated_calls.c.id, rated_calls.c.call_id, rated_calls.c.cost_micros
                    ).where(rated_calls.c.account_id == account)
                )
            ).all()
            entries = (
                await conn.execute(
                    select(
                        ledger_entries.c.rated_call_id,
                        ledger_entries.c.account_id,
                        ledger_entries.c.amount_micros,
                    ).where(ledger_entries.c.rated_call_id.in_([c.id for c in calls]))
                )
            ).all()
    finally:
        await engine.dispose()
    assert len({c.call_id for c in calls}) == len(calls), "a call was rated twice"
    return {
        c.call_id: (
            c.cost_micros,
            sorted((e.account_id, e.amount_micros) for e in entries if e.rated_call_id == c.id),
        )
        for c in calls
    }


def _double_entry(account: str, cost: int, entries: list[Any]) -> bool:
    """The call's charge to the account, and the same amount credited elsewhere."""
    return cost > 0 and (account, -cost) in entries and sum(a for _, a in entries) == 0


def _count(event: str) -> Callable[[list[Log]], int]:
    return lambda logs: sum(1 for line in logs if line.get("event") == event)


def _at_least(count: Callable[[list[Log]], int], n: int) -> Callable[[list[Log]], bool]:
    return lambda logs: count(logs) >= n


@pytest.mark.slow
async def test_given_live_calls_when_sighup_thrice_then_each_reloads_and_every_call_rated_once(
    sql_url: str,
    redis_url: str,
    tmp_path: Path,
    listener: NotifyListener,  # noqa: F811
) -> None:
    account = f"hup-{uuid.uuid4().hex[:8]}"
    plans = [
        CallPlan(account, f"1555{i:07d}", f"1556{i:07d}", 0.05, 1.0 + (i % 3) * 0.5)
        for i in range(12)
    ]
    async with _service(tmp_path, sql_url, redis_url, listener, account) as (daemon, sim, settings):
        calls = asyncio.create_task(run_calls(sim, plans, cps=5))
        answered = _count("call answered")
        for reload in range(1, 4):
            await daemon.wait_log(_at_least(answered, 3 * reload))
            live = answered(daemon.logs) - _count("call ended")(daemon.logs)
            assert live > 0, "SIGHUP must come during live calls"
            mark = len(listener.messages)
            daemon.send(signal.SIGHUP)
            await listener.wait_for(lambda m: m.get("RELOADING") == "1", after=mark)
            await listener.wait_for(lambda m: m.get("READY") == "1", after=mark)
        outcomes: list[CallOutcome] = await calls
        rated = _count("call rated")
        await daemon.wait_log(lambda logs: rated(logs) >= len(plans))
        mark = len(listener.messages)
        daemon.send(signal.SIGTERM)
        code = await daemon.exit_code()
        written = await _written(settings, account)

    assert code == 0
    assert len(daemon.events("reloaded")) == 3
    assert [m for m in listener.messages[mark:] if "STOPPING" in m]
    assert listener.having("WATCHDOG", "1")
    assert all(o.authorized and o.answered for o in outcomes)
    assert sorted(written) == sorted(o.linkedid for o in outcomes)
    assert all(_double_entry(account, cost, entries) for cost, entries in written.values())
    assert not [line for line in daemon.logs if line.get("level") in ("error", "critical")]


@pytest.mark.slow
async def test_given_live_calls_and_pending_settlements_when_sigterm_then_all_written_exit_0(
    sql_url: str,
    redis_url: str,
    tmp_path: Path,
    listener: NotifyListener,  # noqa: F811
) -> None:
    account = f"term-{uuid.uuid4().hex[:8]}"
    ending = [CallPlan(account, f"1557{i:07d}", f"1558{i:07d}", 0.05, 0.6) for i in range(4)]
    running = [CallPlan(account, f"1559{i:07d}", f"1560{i:07d}", 0.05, 120.0) for i in range(3)]
    mdwe = _kernel_has_mdwe()
    # a minute's batch delay: nothing ended is written before the drain writes it
    async with _service(
        tmp_path, sql_url, redis_url, listener, account, batch_delay_ms=60_000, mdwe=mdwe
    ) as (daemon, sim, settings):
        long_calls = asyncio.create_task(run_calls(sim, running, cps=50))
        try:
            ended = await run_calls(sim, ending, cps=50)
            ids = {o.linkedid for o in ended}
            answered = _count("call answered")
            await daemon.wait_log(
                lambda logs: (
                    {x.get("call_id") for x in logs if x["event"] == "call ended"} >= ids
                    and answered(logs) >= len(ending) + len(running)
                )
            )
            rated_before_signal = len(daemon.events("call rated"))
            mark = len(listener.messages)
            daemon.send(signal.SIGTERM)
            code = await daemon.exit_code()
        finally:
            long_calls.cancel()
            await asyncio.gather(long_calls, return_exceptions=True)
        written = await _written(settings, account)

    assert code == 0
    assert rated_before_signal == 0  # every settlement was still in flight at SIGTERM
    assert [m for m in listener.messages[mark:] if m.get("STOPPING") == "1"]
    assert set(written) == ids  # the calls still live were not ended by the daemon
    assert all(_double_entry(account, cost, entries) for cost, entries in written.values())
    assert daemon.events("ratekeeper stopped")
    assert not [line for line in daemon.logs if line.get("level") in ("error", "critical")]
