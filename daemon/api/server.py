"""The management API's listener: uvicorn in the daemon's event loop, on ``[api]``.

Separate from the switch-facing authorization listener (its own port, 7081 by default).
The daemon owns the signals; this server installs none. Usage::

    server = serve_api(build_api(engine, live, admin), settings.api.host, settings.api.port)
    await server.start()   # binds, raises OSError here when the port is taken
    ...
    await server.stop()    # stops accepting, finishes requests in flight
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from fastapi import FastAPI

log = structlog.get_logger(__name__)


class ApiServer(uvicorn.Server):
    """A uvicorn server run as a task of the caller's loop."""

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
            raise RuntimeError("ApiServer is not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind (raising ``OSError`` here, not inside uvicorn) and serve until ``stop()``."""
        if self._task is not None:
            raise RuntimeError("ApiServer already started")
        self._socket = socket.create_server((self.config.host, self.config.port))
        self._task = asyncio.create_task(self.serve(sockets=[self._socket]))
        while not self.started:
            if self._task.done():
                await self._task  # re-raise the startup failure
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.01)
        log.info("management api listening", host=self.config.host, port=self.port)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (uvicorn's graceful timeout)."""
        task, self._task = self._task, None
        if task is None:
            return
        self.should_exit = True
        await task
        if self._socket is not None:
            self._socket.close()
        log.info("management api stopped")


def serve_api(
    app: FastAPI, host: str = "127.0.0.1", port: int = 7081, *, graceful_timeout: int = 5
) -> ApiServer:
    """A server for ``app``; ``await server.start()`` / ``await server.stop()`` in your loop."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        ws="none",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=graceful_timeout,
    )
    return ApiServer(config)
