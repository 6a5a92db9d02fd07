"""The HTTP authorization endpoint: ``GET|POST /v1/authorize`` and ``GET /health``.

For Asterisk dialplan ``CURL()``, FreeSWITCH ``curl`` and anything else that speaks HTTP.
Parameters (query string, form body or JSON object; the body wins): ``account``,
``callee``, ``call_id`` (required), ``caller``, ``switch_id``, ``format``.

Answers: JSON (default); ``format=text`` or ``Accept: text/plain`` gives ``key=value``
lines; ``format=hash`` gives one ``key=value&...`` query string (values URL-encoded) for
Asterisk ``CURLOPT(hashcompat)=yes`` + ``HASH()``. Money (``buy_rate``, ``rate``) is a
decimal string, never a float.

Errors::

    AuthorizeHTTPError          code         HTTP
    +-- BadAuthorizeRequest     BAD_REQUEST  400  (names the field)

The authorizer failing or timing out is not an error of the request: the answer is a
denial with ``SERVICE_UNAVAILABLE`` (HTTP 503), so a switch always fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from daemon.authorization import (
    AuthorizationDecision,
    AuthorizationRequest,
    Authorizer,
    Reason,
)

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16384
MAX_FIELD_LENGTH = 256
FIELDS = ("account", "caller", "callee", "call_id", "switch_id", "format")
REQUIRED = ("account", "callee", "call_id")
FORMATS = ("json", "text", "hash")


class AuthorizeHTTPError(Exception):
    """Base of the HTTP front end's errors; ``code`` is stable."""

    code = "HTTP_ERROR"


class BadAuthorizeRequest(AuthorizeHTTPError):
    """A missing or invalid parameter; ``field`` names it."""

    code = "BAD_REQUEST"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _text_value(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadAuthorizeRequest(field, "must be a string")
    text = str(value)
    if len(text) > MAX_FIELD_LENGTH:
        raise BadAuthorizeRequest(field, f"longer than {MAX_FIELD_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise BadAuthorizeRequest(field, "contains control characters")
    return text


async def _body_params(request: Request) -> Mapping[str, Any]:
    body = await request.body()
    if not body:
        return {}
    if len(body) > MAX_BODY_BYTES:
        raise BadAuthorizeRequest("body", f"larger than {MAX_BODY_BYTES} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadAuthorizeRequest("body", "not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadAuthorizeRequest("body", "JSON body must be an object")
        return data
    if content_type in ("application/x-www-form-urlencoded", ""):
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise BadAuthorizeRequest("body", "not UTF-8") from exc
    raise BadAuthorizeRequest("body", f"unsupported content type {content_type!r}")


def _wanted_format(request: Request, params: Mapping[str, str]) -> str:
    wanted = params.get("format", "")
    if wanted:
        if wanted not in FORMATS:
            raise BadAuthorizeRequest("format", f"must be one of {', '.join(FORMATS)}")
        return wanted
    accept = request.headers.get("accept", "")
    return "text" if "text/plain" in accept and "application/json" not in accept else "json"


def _to_request(params: Mapping[str, str], default_switch_id: str) -> AuthorizationRequest:
    for name in REQUIRED:
        if not params.get(name):
            raise BadAuthorizeRequest(name, "missing")
    return AuthorizationRequest(
        switch_id=params.get("switch_id") or default_switch_id,
        call_id=params["call_id"],
        account=params["account"],
        caller=params.get("caller", ""),
        callee=params["callee"],
    )


def decision_json(decision: AuthorizationDecision) -> dict[str, Any]:
    """The JSON body of an answer (money as decimal strings)."""
    return {
        "allowed": decision.allowed,
        "result": "ALLOW" if decision.allowed else "DENY",
        "reason": str(decision.reason),
        "max_usage": decision.max_usage if decision.allowed else 0,
        "max_usage_ms": decision.max_usage_ms if decision.allowed else 0,
        "routes": [
            {"carrier": r.carrier, "dial_string": r.dial_string, "buy_rate": f"{r.buy_rate:f}"}
            for r in (decision.routes if decision.allowed else ())
        ],
        "rate": None if decision.rate is None else f"{decision.rate:f}",
        "destination": decision.destination,
    }


def decision_pairs(decision: AuthorizationDecision) -> list[tuple[str, str]]:
    """The ``key=value`` pairs of the text and hash formats."""
    allowed = decision.allowed
    routes = decision.routes if allowed else ()
    pairs = [
        ("result", "ALLOW" if allowed else "DENY"),
        ("reason", str(decision.reason)),
        ("maxsecs", str(decision.max_usage) if allowed else ""),
        ("maxms", str(decision.max_usage_ms) if allowed else ""),
        ("routes", "&".join(r.dial_string for r in routes)),
        ("route_count", str(len(routes))),
    ]
    pairs.extend((f"route_{n}", r.dial_string) for n, r in enumerate(routes, start=1))
    return pairs


def _render(pairs: list[tuple[str, str]], fmt: str, status: int) -> Response:
    if fmt == "hash":
        body = "&".join(f"{key}={quote(value, safe='')}" for key, value in pairs)
    else:
        body = "".join(f"{key}={value}\n" for key, value in pairs)
    return PlainTextResponse(body, status_code=status)


def build_authorize_app(
    authorizer: Authorizer, *, default_switch_id: str, authorize_timeout: float = 4.0
) -> Starlette:
    """The Starlette app serving ``/v1/authorize`` and ``/health``."""

    async def authorize(request: Request) -> Response:
        fmt = "text" if "text/plain" in request.headers.get("accept", "") else "json"
        try:
            raw: dict[str, Any] = dict(request.query_params)
            if request.method == "POST":
                raw.update(await _body_params(request))
            params = {k: _text_value(k, v) for k, v in raw.items() if k in FIELDS}
            fmt = _wanted_format(request, params)
            auth_request = _to_request(params, default_switch_id)
        except BadAuthorizeRequest as exc:
            log.warning("http authorize bad request", field=exc.field, error=exc.message)
            if fmt == "json":
                body = {"error": exc.code, "field": exc.field, "message": exc.message}
                return JSONResponse(body, status_code=400)
            pairs = decision_pairs(AuthorizationDecision.deny(Reason.BAD_REQUEST))
            return _render([*pairs, ("field", exc.field)], fmt, 400)
        decision, status = await _decide(auth_request)
        if fmt == "json":
            body = decision_json(decision)
            body["call_id"] = auth_request.call_id
            body["switch_id"] = auth_request.switch_id
            return JSONResponse(body, status_code=status)
        return _render(decision_pairs(decision), fmt, status)

    async def _decide(auth_request: AuthorizationRequest) -> tuple[AuthorizationDecision, int]:
        with structlog.contextvars.bound_contextvars(call_id=auth_request.call_id):
            try:
                async with asyncio.timeout(authorize_timeout):
                    return await authorizer.authorize(auth_request), 200
            except Exception:  # the boundary: fail closed
                log.error(
                    "authorizer failed",
                    call_id=auth_request.call_id,
                    account=auth_request.account,
                    exc_info=True,
                )
                return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE), 503

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/authorize", authorize, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


class AuthorizeHTTPServer(uvicorn.Server):
    """A uvicorn server run as a task in the caller's loop; it installs no signal handlers."""

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
            raise RuntimeError("AuthorizeHTTPServer is not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind (raising ``OSError`` here, not inside uvicorn) and serve until ``stop()``."""
        if self._task is not None:
            raise RuntimeError("AuthorizeHTTPServer already started")
        self._socket = socket.create_server((self.config.host, self.config.port))
        # accepted sockets inherit it: without, the body waits ~40 ms for a delayed ACK
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.create_task(self.serve(sockets=[self._socket]))
        while not self.started:
            if self._task.done():
                await self._task  # re-raise the startup failure
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.01)
        log.info("http authorize server listening", host=self.config.host, port=self.port)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (uvicorn's graceful timeout)."""
        task, self._task = self._task, None
        if task is None:
            return
        self.should_exit = True
        await task
        log.info("http authorize server stopped")


def serve_authorize_http(
    app: Starlette, host: str = "127.0.0.1", port: int = 8088, *, graceful_timeout: int = 5
) -> AuthorizeHTTPServer:
    """A server for ``app``; ``await server.start()`` / ``await server.stop()`` in your loop."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=graceful_timeout,
    )
    return AuthorizeHTTPServer(config)
