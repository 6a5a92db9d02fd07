"""systemd notifications from the real daemon, received on a real AF_UNIX datagram socket.

The daemon (real SQL, real Redis, a simulated Asterisk over real AMI) sends READY=1 only
once its switch is connected (or, after ``startup_timeout``, with a STATUS naming the
switch still missing), WATCHDOG=1 while its connector loop makes progress and not while
it is stuck (its private Redis frozen with SIGSTOP under a call's events),
RELOADING=1 ... READY=1 around a reload and STOPPING=1 when it stops. ``NotifyListener``
is the socket systemd would own; ``test_signals.py`` uses it too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.app import Daemon
from daemon.sd_notify import SystemdNotifier, watchdog_interval
from daemon.settings import RedisSettings, Settings
from daemon.simulator.asterisk import CallPlan, SimulatedAsterisk
from tests.support.daemon_harness import eventually, make_settings, provision, unique_switch_id

Message = dict[str, str]


class NotifyListener:
    """The notification socket systemd gives a Type=notify service (path or ``@name``)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.messages: list[Message] = []
        self._arrived = asyncio.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self._sock.bind(bind_to)
        self._sock.setblocking(False)
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Receive datagrams in the background."""
        self._reader = asyncio.create_task(self._read(), name="notify-listener")

    async def close(self) -> None:
        """Stop receiving and close the socket."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._sock.close()

    def having(self, key: str, value: str | None = None) -> list[Message]:
        """The messages that set ``key`` (to ``value`` when given), in arrival order."""
        return [m for m in self.messages if key in m and (value is None or m[key] == value)]

    async def wait_for(
        self, predicate: Callable[[Message], bool], *, after: int = 0, within: float = 20.0
    ) -> Message:
        """The first message from index ``after`` on that satisfies ``predicate``."""
        async with asyncio.timeout(within):
            while True:
                for message in self.messages[after:]:
                    if predicate(message):
                        return message
                self._arrived.clear()
                await self._arrived.wait()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 4096)
            lines = data.decode("utf-8").split("\n")
            self.messages.append(dict(line.partition("=")[::2] for line in lines if line))
            self._arrived.set()


@pytest.fixture
async def listener() -> AsyncIterator[NotifyListener]:
    """A notification socket on an abstract address of its own."""
    notify = NotifyListener(f"@ratekeeper-test-{uuid.uuid4().hex}")
    notify.start()
    try:
        yield notify
    finally:
        await notify.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _simulator(ami_port: int = 0) -> SimulatedAsterisk:
    return SimulatedAsterisk(
        ami_username="billing",
        ami_secret="billing",
        fastagi_host="127.0.0.1",
        fastagi_port=0,
        ami_port=ami_port,
    )


def _settings(tmp: Path, sql_url: str, redis_url: str, ami_port: int) -> Settings:
    return make_settings(tmp, sql_url, redis_url, switch_id=unique_switch_id(), ami_port=ami_port)


# -- the notifier on its own ----------------------------------------------------------------


def test_given_no_notify_socket_when_notifying_then_nothing_is_sent_and_nothing_raises() -> None:
    notifier = SystemdNotifier.from_environment({})

    assert not notifier.enabled
    assert notifier.ready("up") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval is None


async def test_given_a_path_socket_when_notifying_then_each_datagram_carries_its_assignments() -> (
    None
):
    directory = tempfile.mkdtemp(prefix="rk-notify-", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(directory, "notify")
    notify = NotifyListener(path)
    notify.start()
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path})
    try:
        assert notifier.ready("serving;\n 2 switches")
        assert notifier.reloading()
        assert notifier.stopping()
        await notify.wait_for(lambda m: "STOPPING" in m)
    finally:
        notifier.close()
        await notify.close()
        os.unlink(path)
        os.rmdir(directory)

    ready, reloading, stopping = notify.messages
    assert ready == {"READY": "1", "STATUS": "serving; 2 switches"}
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert stopping == {"STOPPING": "1"}


def test_given_a_vanished_socket_when_notifying_then_logged_once_and_never_raised() -> None:
    notifier = SystemdNotifier(f"@ratekeeper-nobody-{uuid.uuid4().hex}")
    with capture_logs() as logs:
        results = [notifier.watchdog(), notifier.watchdog(), notifier.ready()]
    notifier.close()

    assert results == [False, False, False]
    assert notifier.failures == 3
    assert [log["log_level"] for log in logs] == ["warning"]


def test_given_watchdog_variables_when_read_then_the_interval_applies_to_its_pid_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "42"}, pid=42) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "42"}, pid=43) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


# -- the daemon -----------------------------------------------------------------------------


async def test_given_switch_down_when_daemon_started_then_ready_only_once_it_connects(
    sql_url: str, redis_url: str, tmp_path: Path, listener: NotifyListener
) -> None:
    port = _free_port()  # nothing listens there yet: the connector keeps retrying
    settings = _settings(tmp_path, sql_url, redis_url, port)
    daemon = Daemon(settings, systemd=SystemdNotifier(listener.address))
    sim = _simulator(port)
    await daemon.start()
    try:
        ready = asyncio.create_task(daemon.ready())
        await asyncio.sleep(0.5)  # several reconnection attempts
        before = list(listener.messages)
        await sim.start()
        missing = await ready
        message = await listener.wait_for(lambda m: m.get("READY") == "1")
    finally:
        await daemon.stop()
        await sim.stop()

    assert before == []
    assert missing == []
    assert message["STATUS"] == "serving; 1 switch connected"
    assert listener.having("STOPPING", "1")


async def test_given_dead_switch_when_startup_timeout_passes_then_ready_names_it(
    sql_url: str, redis_url: str, tmp_path: Path, listener: NotifyListener
) -> None:
    settings = _settings(tmp_path, sql_url, redis_url, _free_port())
    switch_id = settings.switches[0].id
    daemon = Daemon(settings, systemd=SystemdNotifier(listener.address), startup_timeout=0.3)
    await daemon.start()
    try:
        missing = await daemon.ready()
        message = await listener.wait_for(lambda m: m.get("READY") == "1")
    finally:
        await daemon.stop()

    assert missing == [switch_id]
    assert message["STATUS"] == f"serving; switches not connected (retrying): {switch_id}"


async def test_given_running_daemon_when_reloaded_and_stopped_then_reloading_ready_stopping(
    sql_url: str, redis_url: str, tmp_path: Path, listener: NotifyListener
) -> None:
    sim = _simulator()
    await sim.start()
    settings = _settings(tmp_path, sql_url, redis_url, sim.ami_port)
    daemon = Daemon(settings, systemd=SystemdNotifier(listener.address))
    await daemon.start()
    try:
        await daemon.ready()
        await daemon.reload()
        await daemon.reload()
    finally:
        await daemon.stop()
        await sim.stop()
    await listener.wait_for(lambda m: "STOPPING" in m)

    kinds = [
        next(k for k in ("READY", "RELOADING", "STOPPING") if k in m) for m in listener.messages
    ]
    assert kinds == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]
    assert all(int(m["MONOTONIC_USEC"]) > 0 for m in listener.having("RELOADING", "1"))


@pytest.mark.slow
async def test_given_connector_loop_stuck_on_frozen_redis_then_watchdog_pings_stop_until_it_moves(
    sql_url: str, tmp_path: Path, listener: NotifyListener
) -> None:
    account = f"wd-{unique_switch_id()}"
    sim = _simulator()
    await sim.start()
    # the daemon's own embedded Redis: frozen with SIGSTOP, no other test shares it
    base = _settings(tmp_path, sql_url, "unused", sim.ami_port)
    settings = base.model_copy(update={"redis": RedisSettings()})
    await provision(settings, {account: Decimal("10")})
    daemon = Daemon(settings, systemd=SystemdNotifier(listener.address, watchdog_interval=0.4))
    redis_pid = 0
    try:
        await daemon.start()
        assert daemon.resources is not None
        redis_pid = int((await daemon.resources.redis.info("server"))["process_id"])
        await daemon.ready()
        healthy = len(listener.messages)
        await listener.wait_for(lambda m: "WATCHDOG" in m, after=healthy)
        await listener.wait_for(lambda m: "WATCHDOG" in m, after=len(listener.messages))

        os.kill(redis_pid, signal.SIGSTOP)
        call = asyncio.create_task(
            sim.place_call(CallPlan(account, "15550001", "15551001", 0.05, 0.5, authorize=False))
        )  # its answer needs Redis: the connector's dispatcher waits on it
        stuck = await listener.wait_for(lambda m: "stuck" in m.get("STATUS", ""))
        stuck_at = listener.messages.index(stuck)
        await asyncio.sleep(2.0)  # five watchdog periods
        while_stuck = listener.messages[stuck_at:]

        os.kill(redis_pid, signal.SIGCONT)
        redis_pid = 0
        await listener.wait_for(lambda m: "WATCHDOG" in m, after=len(listener.messages))
        outcome = await call
        assert daemon.sessions is not None
        sessions = daemon.sessions
        await eventually(lambda: not sessions.live_sessions())
    finally:
        if redis_pid:
            os.kill(redis_pid, signal.SIGCONT)
        await daemon.stop()
        await sim.stop()

    assert outcome.answered
    assert stuck["STATUS"] == f"connector loop stuck: {settings.switches[0].id}"
    assert not [m for m in while_stuck if "WATCHDOG" in m]
    assert len(listener.having("WATCHDOG", "1")) >= 3
