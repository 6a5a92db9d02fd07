"""A uvicorn server run as a task of the daemon's own event loop.

Both listeners use it: the switch-facing authorization endpoint
(``daemon.http_authorize``) and the operator's management API (``daemon.api.server``).
It binds its socket itself, so a taken port raises ``OSError`` in ``start()`` rather
than inside uvicorn, and it installs no signal handlers: the daemon owns the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn

log = structlog.get_logger(__name__)


class EmbeddedServer(uvicorn.Server):
    """``start()`` binds and serves in the caller's loop until ``stop()``."""

    label = "http server"  # named in its log lines
    tcp_nodelay = False  # set on the listening socket: accepted sockets inherit it

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The daemon owns the signals: capture none."""
        yield

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when configured with port 0)."""
        if self._socket is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind (raising ``OSError`` here, not inside uvicorn) and serve until ``stop()``."""
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._socket = socket.create_server((self.config.host, self.config.port))
        if self.tcp_nodelay:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.create_task(self.serve(sockets=[self._socket]))
        while not self.started:
            if self._task.done():
                await self._task  # re-raise the startup failure
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.01)
        log.info(f"{self.label} listening", host=self.config.host, port=self.port)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (uvicorn's graceful timeout)."""
        task, self._task = self._task, None
        if task is None:
            return
        self.should_exit = True
        await task
        if self._socket is not None:
            self._socket.close()
        log.info(f"{self.label} stopped")
