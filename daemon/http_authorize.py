"""The HTTP authorization endpoint: ``GET|POST /v1/authorize`` and ``GET /health``.

For Asterisk dialplan ``CURL()``, FreeSWITCH ``curl`` and anything else that speaks HTTP.
Parameters (query string, form body or JSON object; the body wins): ``account``,
``callee``, ``call_id`` (required), ``caller``, ``switch_id``, ``format``.

Answers: JSON (default); ``format=text`` or ``Accept: text/plain`` gives ``key=value``
lines; ``format=hash`` gives one ``key=value&...`` query string (values URL-encoded) for
Asterisk ``CURLOPT(hashcompat)=yes`` + ``HASH()``. Money (``buy_rate``, ``rate``) is a
decimal string, never a float.

The hot path: a switch's plain ``GET /v1/authorize`` is answered by the HTTP protocol
itself, without ASGI (``http_authorize_protocol``), and for the common call without a
task either: the authorization runs until its Redis ``reserve`` is queued, and the answer
is written from the reply's callback (``AuthorizeEndpoint.start_json``,
``AuthorizationService.decide_soon``), under the same time limit; every other ``GET|POST
/v1/authorize`` by a raw ASGI handler (``AuthorizeEndpoint``, which decides both) that
the app calls before Starlette's routing; Starlette serves every other route
(``/health``, routes added with ``extra_routes``) and the other methods of
``/v1/authorize`` (405). The server is uvicorn with the httptools parser (h11, pure
Python, cost more than a third of a request), and each answer leaves in one ``send``.

Errors::

    AuthorizeHTTPError          code         HTTP
    +-- BadAuthorizeRequest     BAD_REQUEST  400  (names the field)

The authorizer failing or timing out is not an error of the request: the answer is a
denial with ``SERVICE_UNAVAILABLE`` (HTTP 503), as is a ``SERVICE_UNAVAILABLE`` denial of
the authorizer itself (a draining daemon), so a switch always fails closed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from daemon.authorization import (
    AuthorizationDecision,
    AuthorizationRequest,
    Authorizer,
    DecisionListener,
    Reason,
)
from daemon.deadlines import Deadlines
from daemon.embedded_server import EmbeddedServer
from daemon.http_authorize_protocol import AuthorizeHTTPProtocol

log = structlog.get_logger(__name__)

AUTHORIZE_PATH = "/v1/authorize"
MAX_BODY_BYTES = 16384
MAX_FIELD_LENGTH = 256
FIELDS = frozenset(("account", "caller", "callee", "call_id", "switch_id", "format"))
REQUIRED = ("account", "callee", "call_id")
FORMATS = ("json", "text", "hash")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_quoted = encode_basestring  # a JSON string literal, non-ASCII kept (as ensure_ascii=False)
_JSON_TYPE = (b"content-type", b"application/json")
_TEXT_TYPE = (b"content-type", b"text/plain; charset=utf-8")


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
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_FIELD_LENGTH:
        raise BadAuthorizeRequest(field, f"longer than {MAX_FIELD_LENGTH} characters")
    if _CONTROL.search(text) is not None:
        raise BadAuthorizeRequest(field, "contains control characters")
    return text


def _query_params(query: bytes) -> dict[str, str]:
    """The query string as a dict (the last of repeated names wins, as in Starlette)."""
    if not query:
        return {}
    text = query.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    params: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            params[name] = value
    return params


_NOT_PLAIN = re.compile(rb"[%+\x00-\x1f\x7f]")


def _plain_query(query: bytes) -> dict[str, str] | None:
    """The fields of a query string with nothing to decode, no control character and no
    value too long (what a switch sends), checked at C speed; None: any other query,
    which ``_query_params`` and ``_text_value`` take field by field."""
    if not query or _NOT_PLAIN.search(query) is not None:
        return None
    params: dict[str, str] = {}
    for pair in query.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name in FIELDS:
            if len(value) > MAX_FIELD_LENGTH:
                return None  # refused, with its name, by _text_value
            params[name] = value
    return params


def _body_params(body: bytes, content_type: str) -> Mapping[str, Any]:
    if not body:
        return {}
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


def _wanted_format(accept: str, params: Mapping[str, str]) -> str:
    wanted = params.get("format", "")
    if wanted:
        if wanted not in FORMATS:
            raise BadAuthorizeRequest("format", f"must be one of {', '.join(FORMATS)}")
        return wanted
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
    allowed = decision.allowed
    return {
        "allowed": allowed,
        "result": "ALLOW" if allowed else "DENY",
        "reason": str(decision.reason),
        "max_usage": decision.max_usage if allowed else 0,
        "max_usage_ms": decision.max_usage_ms if allowed else 0,
        "routes": [
            {"carrier": r.carrier, "dial_string": r.dial_string, "buy_rate": f"{r.buy_rate:f}"}
            for r in (decision.routes if allowed else ())
        ],
        "rate": None if decision.rate is None else f"{decision.rate:f}",
        "destination": decision.destination,
    }


def decision_json_bytes(decision: AuthorizationDecision, call_id: str, switch_id: str) -> bytes:
    """``decision_json`` plus the request's ids, encoded compactly: the answer's bytes,
    written out directly (no dict, no encoder pass; same JSON as ``json.dumps``)."""
    allowed = decision.allowed
    routes = ",".join(
        f'{{"carrier":{_quoted(r.carrier)},"dial_string":{_quoted(r.dial_string)},'
        f'"buy_rate":"{r.buy_rate:f}"}}'
        for r in (decision.routes if allowed else ())
    )
    rate = "null" if decision.rate is None else f'"{decision.rate:f}"'
    return (
        f'{{"allowed":{"true" if allowed else "false"},'
        f'"result":"{"ALLOW" if allowed else "DENY"}","reason":{_quoted(str(decision.reason))},'
        f'"max_usage":{decision.max_usage if allowed else 0},'
        f'"max_usage_ms":{decision.max_usage_ms if allowed else 0},'
        f'"routes":[{routes}],"rate":{rate},"destination":{_quoted(decision.destination)},'
        f'"call_id":{_quoted(call_id)},"switch_id":{_quoted(switch_id)}}}'
    ).encode()


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


def render_pairs(pairs: list[tuple[str, str]], fmt: str) -> bytes:
    """The body of the text (``key=value`` lines) or hash (one query string) format."""
    if fmt == "hash":
        return "&".join(f"{key}={quote(value, safe='')}" for key, value in pairs).encode()
    return "".join(f"{key}={value}\n" for key, value in pairs).encode()


async def _send(send: Send, status: int, content_type: tuple[bytes, bytes], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), content_type],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Disconnected(Exception):
    """The client went away while sending its body."""


class AuthorizeEndpoint:
    """The raw ASGI handler of ``GET|POST /v1/authorize`` (no per-request Request object)."""

    def __init__(
        self, authorizer: Authorizer, *, default_switch_id: str, authorize_timeout: float
    ) -> None:
        self._authorizer = authorizer
        # the authorizer's callback way (``AuthorizationService.decide_soon``), if it has one
        self._decide_soon: Callable[[AuthorizationRequest, DecisionListener], bool] | None = (
            getattr(authorizer, "decide_soon", None)
        )
        self._default_switch_id = default_switch_id
        self._deadlines = Deadlines(authorize_timeout)  # one timer for every request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one authorization request."""
        accept = content_type = ""
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1").split(";")[0].strip().lower()
        fmt = "text" if "text/plain" in accept else "json"
        try:
            params = None if scope["method"] == "POST" else _plain_query(scope["query_string"])
            if params is None:  # a body, an escape, a control character: field by field
                raw: dict[str, Any] = _query_params(scope["query_string"])
                if scope["method"] == "POST":
                    raw.update(_body_params(await _read_body(receive), content_type))
                params = {k: _text_value(k, v) for k, v in raw.items() if k in FIELDS}
            fmt = _wanted_format(accept, params)
            request = _to_request(params, self._default_switch_id)
        except BadAuthorizeRequest as exc:
            await self._refuse(send, exc, fmt)
            return
        except _Disconnected:
            return
        decision, status = await self._decide(request)
        if fmt == "json":
            body = decision_json_bytes(decision, request.call_id, request.switch_id)
            await _send(send, status, _JSON_TYPE, body)
        else:
            await _send(send, status, _TEXT_TYPE, render_pairs(decision_pairs(decision), fmt))

    def plain_get(self, query: bytes, accept: bytes) -> AuthorizationRequest | None:
        """The request of a ``GET`` whose query needs no decoding and whose answer is
        JSON (what a switch sends); None for any other, which ``__call__`` answers (its
        refusals included). The HTTP protocol's fast path (``http_authorize_protocol``)."""
        if b"#" in query:
            return None
        params = _plain_query(query)
        if params is None:
            return None
        try:
            if _wanted_format(accept.decode("latin-1"), params) != "json":
                return None
            return _to_request(params, self._default_switch_id)
        except BadAuthorizeRequest:
            return None

    def start_json(
        self, request: AuthorizationRequest, answer: Callable[[int, bytes], None]
    ) -> bool:
        """Answer ``request`` in JSON without a task when the authorizer can decide it from
        callbacks (``decide_soon``: the common call): ``answer(status, body)`` is called
        once, later, from a callback of the loop, under the same time limit and with the
        same answers as ``answer_json``. False, with nothing started: ``answer_json`` is
        the way."""
        decide_soon = self._decide_soon
        if decide_soon is None:
            return False
        pending = _PendingAnswer(request, answer, self._deadlines)
        try:
            if not decide_soon(request, pending):
                return False
        except Exception:  # raised before anything started: answer_json will log it
            return False
        self._deadlines.watch(pending)
        return True

    async def answer_json(self, request: AuthorizationRequest) -> tuple[int, bytes]:
        """The status and JSON body of the answer to ``request``."""
        decision, status = await self._decide(request)
        return status, decision_json_bytes(decision, request.call_id, request.switch_id)

    async def _decide(self, request: AuthorizationRequest) -> tuple[AuthorizationDecision, int]:
        tokens = structlog.contextvars.bind_contextvars(call_id=request.call_id)
        try:
            decision = await self._deadlines.run(self._authorizer.authorize(request))
            return decision, _status_of(decision)
        except Exception as exc:  # the boundary: fail closed (a TimeoutError past the limit too)
            return _failure(request, exc), 503
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _refuse(self, send: Send, exc: BadAuthorizeRequest, fmt: str) -> None:
        log.warning("http authorize bad request", field=exc.field, error=exc.message)
        if fmt == "json":
            body = {"error": exc.code, "field": exc.field, "message": exc.message}
            await _send(send, 400, _JSON_TYPE, _JSON.encode(body).encode())
            return
        pairs = decision_pairs(AuthorizationDecision.deny(Reason.BAD_REQUEST))
        await _send(send, 400, _TEXT_TYPE, render_pairs([*pairs, ("field", exc.field)], fmt))


def _status_of(decision: AuthorizationDecision) -> int:
    """503 for a ``SERVICE_UNAVAILABLE`` decision (a draining daemon), else 200."""
    return 503 if decision.reason is Reason.SERVICE_UNAVAILABLE else 200


def _failure(request: AuthorizationRequest, error: BaseException) -> AuthorizationDecision:
    """The authorizer failed (or timed out) on ``request``: logged, answered as a
    ``SERVICE_UNAVAILABLE`` denial (a switch fails closed)."""
    log.error(
        "authorizer failed", call_id=request.call_id, account=request.account, exc_info=error
    )
    return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE)


class _PendingAnswer:
    """A request of ``AuthorizeEndpoint.start_json`` until it is answered: the listener of
    its decision, and what its deadline cuts (``cancel``). Answers once."""

    __slots__ = ("_answer", "_deadlines", "_request")

    def __init__(
        self,
        request: AuthorizationRequest,
        answer: Callable[[int, bytes], None] | None,
        deadlines: Deadlines,
    ) -> None:
        self._request = request
        self._answer = answer  # None once answered
        self._deadlines = deadlines

    def decided(self, decision: AuthorizationDecision) -> None:
        """Answer the decision (``_status_of``, as ``_decide``)."""
        answer, self._answer = self._answer, None
        if answer is None:
            return  # cut by its deadline already
        self._deadlines.forget(self)
        request = self._request
        answer(
            _status_of(decision),
            decision_json_bytes(decision, request.call_id, request.switch_id),
        )

    def failed(self, error: BaseException) -> None:
        """The authorizer failed: log it, answer ``SERVICE_UNAVAILABLE`` (fail closed)."""
        answer, self._answer = self._answer, None
        if answer is None:
            return
        self._deadlines.forget(self)
        request = self._request
        denial = _failure(request, error)
        answer(503, decision_json_bytes(denial, request.call_id, request.switch_id))

    def cancel(self) -> None:
        """Past the time limit: answered as a timed-out authorization is."""
        self.failed(TimeoutError(f"no answer within {self._deadlines.timeout} s"))


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadAuthorizeRequest("body", f"larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class AuthorizeApp(Starlette):
    """Starlette with ``GET|POST /v1/authorize`` answered before routing."""

    def __init__(self, endpoint: AuthorizeEndpoint, routes: Sequence[BaseRoute]) -> None:
        super().__init__(routes=list(routes))
        self.authorize_endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path for authorizations, Starlette for everything else."""
        if (
            scope["type"] == "http"
            and scope["path"] == AUTHORIZE_PATH
            and scope["method"] in ("GET", "POST")
        ):
            await self.authorize_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def build_authorize_app(
    authorizer: Authorizer,
    *,
    default_switch_id: str,
    authorize_timeout: float = 4.0,
    extra_routes: Sequence[BaseRoute] = (),
) -> AuthorizeApp:
    """The app serving ``/v1/authorize``, ``/health`` and ``extra_routes``."""
    endpoint = AuthorizeEndpoint(
        authorizer, default_switch_id=default_switch_id, authorize_timeout=authorize_timeout
    )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes: list[BaseRoute] = [
        Route(AUTHORIZE_PATH, endpoint, methods=["GET", "POST"]),
        Route("/health", health, methods=["GET"]),
        *extra_routes,
    ]
    return AuthorizeApp(endpoint, routes)


class AuthorizeHTTPServer(EmbeddedServer):
    """The switch-facing uvicorn server (``daemon.embedded_server``)."""

    label = "http authorize server"
    tcp_nodelay = True  # without, the body waits ~40 ms for a delayed ACK


def serve_authorize_http(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 8088,
    *,
    graceful_timeout: int = 5,
    keep_alive: float = 5.0,
) -> AuthorizeHTTPServer:
    """A server for ``app``; ``await server.start()`` / ``await server.stop()`` in your loop.

    ``keep_alive``: seconds an idle connection is kept open for its next request."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=AuthorizeHTTPProtocol,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=graceful_timeout,
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]  # uvicorn takes an int
    )
    return AuthorizeHTTPServer(config)
