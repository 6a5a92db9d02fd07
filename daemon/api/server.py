"""The management API's listener: uvicorn in the daemon's event loop, on ``[api]``.

Separate from the switch-facing authorization listener (its own port, 7081 by default).
The daemon owns the signals; this server installs none. Usage::

    server = serve_api(build_api(engine, live, admin), settings.api.host, settings.api.port)
    await server.start()   # binds, raises OSError here when the port is taken
    ...
    await server.stop()    # stops accepting, finishes requests in flight
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from daemon.embedded_server import EmbeddedServer


class ApiServer(EmbeddedServer):
    """The management API's uvicorn server (``daemon.embedded_server``)."""

    label = "management api"


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
