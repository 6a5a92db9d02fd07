"""MQTT for tests: the broker of ``RATEKEEPER_TEST_MQTT_URL``, or an in-process amqtt broker.

:class:`InProcessBroker` runs an amqtt broker on its own event loop in a thread, so that a
session fixture can own it and a test can stop and restart it on the same port while the
code under test keeps running on the test's loop. Its :class:`ClientGate` refuses the
CONNECT of chosen client ids (CONNACK "not authorized"), which lets a test decide who
reconnects first after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from tests.support.services import MQTT_ENV

_START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ClientGate:
    """Client id prefixes the broker refuses to let in (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: set[str] = set()

    def refuse(self, prefix: str) -> None:
        """Refuse every client whose id starts with ``prefix``."""
        with self._lock:
            self._refused.add(prefix)

    def admit(self, prefix: str) -> None:
        """Let the clients of ``prefix`` in again."""
        with self._lock:
            self._refused.discard(prefix)

    def admits(self, client_id: str) -> bool:
        """True unless ``client_id`` starts with a refused prefix."""
        with self._lock:
            return not any(client_id.startswith(prefix) for prefix in self._refused)


class GateAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt authentication plugin consulting a :class:`ClientGate`."""

    @dataclass
    class Config:
        """The gate, passed in the broker's plugin configuration."""

        gate: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        """Admit the session unless the gate refuses its client id."""
        gate = getattr(self.context.config, "gate", None)
        if not isinstance(gate, ClientGate):
            return True
        return gate.admits(session.client_id or "")


class InProcessBroker:
    """An amqtt broker on 127.0.0.1, on its own loop in a daemon thread."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.gate = ClientGate()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"amqtt-{self.port}", daemon=True
        )
        self._thread.start()
        self._broker: Broker | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                f"{__name__}.GateAuthPlugin": {"gate": self.gate},
            },
        }

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_START_TIMEOUT)

    async def _start(self) -> None:
        broker = Broker(self._config())
        await broker.start()
        self._broker = broker

    async def _stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        shutdown = asyncio.ensure_future(broker.shutdown())
        while not shutdown.done():
            await asyncio.wait({shutdown}, timeout=0.2)
            _recancel_reader_loops()
        await shutdown

    @property
    def running(self) -> bool:
        """True while the broker accepts connections."""
        return self._broker is not None

    def start(self) -> None:
        """Start a fresh broker on ``port`` (blocking until it listens)."""
        self._call(self._start())

    def stop(self) -> None:
        """Shut the broker down: every client is disconnected, the port is closed."""
        self._call(self._stop())

    async def astart(self) -> None:
        """``start`` without blocking the caller's event loop."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """``stop`` without blocking the caller's event loop."""
        await asyncio.to_thread(self.stop)

    def close(self) -> None:
        """Stop the broker and its thread."""
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_START_TIMEOUT)
        self._loop.close()


class TcpProxy:
    """A TCP relay in front of a broker that a test can turn into a black hole.

    While ``black_hole`` is set, bytes from the clients are counted and swallowed (a QoS 1
    PUBLISH then stays in flight: no PUBACK ever comes); ``drop()`` closes every relayed
    connection, as a broker crash or a network cut would.
    """

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 1883)
        self._netloc_user = parts.netloc.rpartition("@")[0]
        self._scheme = parts.scheme
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.black_hole = False
        self.swallowed = 0
        self.url = ""

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1; ``url`` keeps the upstream's credentials."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        user = f"{self._netloc_user}@" if self._netloc_user else ""
        self.url = f"{self._scheme}://{user}127.0.0.1:{port}"

    def drop(self) -> None:
        """Close every relayed connection (new ones are still accepted)."""
        for writer in list(self._writers):
            writer.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, broker_w}
        up = asyncio.create_task(self._pump(client_r, broker_w, upstream=True))
        down = asyncio.create_task(self._pump(broker_r, client_w, upstream=False))
        self._tasks |= {up, down}
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for writer in (client_w, broker_w):
            writer.close()
            self._writers.discard(writer)
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        self._tasks -= {up, down}

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if upstream and self.black_hole:
                    self.swallowed += len(data)
                    continue
                writer.write(data)
                await writer.drain()


def _recancel_reader_loops() -> None:
    """Cancel again the amqtt connection readers whose cancellation was lost.

    On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives as its inner
    read completes (fixed in 3.12); amqtt's reader loop then keeps reading and
    ``Broker.shutdown`` waits for it until the client's keepalive runs out.
    """
    for task in asyncio.all_tasks():
        name = getattr(task.get_coro(), "__qualname__", "")
        if name.endswith("_reader_loop") and task.cancelling() and not task.done():
            task.cancel()


def mqtt_url_for_session() -> Iterator[str]:
    """The MQTT URL for this test session (env Mosquitto, or an in-process amqtt broker)."""
    url = os.environ.get(MQTT_ENV)
    if url:
        yield url
        return
    broker = InProcessBroker()
    broker.start()
    try:
        yield broker.url
    finally:
        broker.close()


def private_broker() -> Iterator[InProcessBroker]:
    """A started in-process broker of one test's own (for outages), closed afterwards."""
    broker = InProcessBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
