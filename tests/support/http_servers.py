"""The switch-facing HTTP server of a test: started on 127.0.0.1, port 0, stopped after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from daemon.http_authorize import AuthorizeHTTPServer, serve_authorize_http


@asynccontextmanager
async def served(app: Starlette, *, keep_alive: float = 5.0) -> AsyncIterator[AuthorizeHTTPServer]:
    """``app`` behind the daemon's own uvicorn server (``serve_authorize_http``)."""
    http_server = serve_authorize_http(app, "127.0.0.1", 0, keep_alive=keep_alive)
    await http_server.start()
    try:
        yield http_server
    finally:
        await http_server.stop()
