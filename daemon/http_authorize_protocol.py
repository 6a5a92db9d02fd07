"""The switch-facing HTTP protocol: uvicorn's httptools protocol with a fast path.

A switch's authorization, ``GET /v1/authorize?account=...&callee=...&call_id=...`` over
HTTP/1.1 with a query that needs no decoding and a JSON answer, is answered straight from
the parser's callbacks: no ASGI scope, request cycle, message dicts or header checks,
just the authorization and one write of the whole answer. The common call is not even
given a task: the endpoint starts its authorization and its answer is written from the
callback of the Redis reply (``AuthorizeEndpoint.start_json``); any other call runs in a
task (``answer_json``). Every other request (other paths and methods, POST bodies,
escapes, ``format=``/``Accept: text/plain``, HTTP/1.0, an upgrade, a request the
endpoint would refuse) goes the ASGI way, unchanged, and gets the same answers: the
endpoint (``http_authorize.AuthorizeEndpoint``) decides both.

What uvicorn does for a connection is kept: keep-alive and its timeout (the deadlines of
a server's idle connections on one shared timer, instead of a ``call_later`` armed and
cancelled per response), pipelined requests answered in order (a fast one is queued like
any other), ``Connection: close``, the graceful shutdown (a request in flight is
answered, then the connection closes), the ``date`` header, flow control.
``_FastCycle`` is what uvicorn reads of a request cycle.

Each answer (fast or not) leaves in one ``send`` (``_CoalescingTransport``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from daemon.authorization import AuthorizationRequest
from daemon.deadlines import Deadlines

log = structlog.get_logger(__name__)

FAST_PREFIX = b"/v1/authorize?"
_JSON_HEADERS = b"content-type: application/json\r\ncontent-length: "
_CLOSE = b"connection: close\r\n"


class FastAuthorize(Protocol):
    """What the fast path asks of the endpoint (``http_authorize.AuthorizeEndpoint``)."""

    def plain_get(self, query: bytes, accept: bytes) -> AuthorizationRequest | None:
        """The request of a plain GET answered in JSON; None: the ASGI way."""

    def start_json(
        self, request: AuthorizationRequest, answer: Callable[[int, bytes], None]
    ) -> bool:
        """Answer by ``answer(status, body)`` from a callback; False: ``answer_json``."""

    async def answer_json(self, request: AuthorizationRequest) -> tuple[int, bytes]:
        """The status and JSON body of the answer."""


class _NoWaiters:
    """The message event of a fast cycle: nothing ever waits on it."""

    def set(self) -> None:
        """uvicorn sets it when the body ends or the client goes away."""


class _FastCycle:
    """What uvicorn's protocol reads and writes of a request cycle, for a fast answer."""

    __slots__ = ("disconnected", "keep_alive", "more_body", "protocol", "response_complete")
    message_event = _NoWaiters()

    def __init__(self, protocol: AuthorizeHTTPProtocol, keep_alive: bool) -> None:
        self.protocol = protocol
        self.keep_alive = keep_alive  # uvicorn clears it to close after the answer
        self.response_complete = False
        self.disconnected = False  # set by uvicorn when the connection is lost
        self.more_body = True

    def answer(self, status: int, body: bytes) -> None:
        """The answer, from a callback (``AuthorizeEndpoint.start_json``)."""
        self.protocol.answered(self, status, body)


class _CoalescingTransport:
    """A transport whose writes of one event-loop tick leave in ONE ``send``.

    uvicorn writes a response's head and its body separately: two system calls, two TCP
    segments (``TCP_NODELAY``) and two wake-ups of the client, per answer. Writes are
    queued and flushed together on the next tick (or before ``close``); everything else
    is the wrapped transport's.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Queue ``data``; the first write of a tick schedules the flush."""
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_now(self, data: bytes) -> None:
        """Send what is queued and ``data`` now, in one ``send``."""
        if self._pending:
            self._pending.append(data)
            self._flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Send what is queued, then close."""
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Drop what is queued and close at once."""
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        """The wrapped transport's (asked once per answer: not through ``__getattr__``)."""
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Idle:
    """A connection waiting for its next request: what the keep-alive deadline cuts."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: AuthorizeHTTPProtocol) -> None:
        self._protocol = protocol

    def cancel(self) -> None:
        """Idle past the keep-alive timeout: close the connection, as uvicorn does."""
        self._protocol.timeout_keep_alive_handler()


# per server: the keep-alive deadline of its idle connections, on one shared timer
_KEEP_ALIVE: weakref.WeakKeyDictionary[ServerState, Deadlines] = weakref.WeakKeyDictionary()


class AuthorizeHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering plain authorizations itself."""

    _fast: FastAuthorize | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the transport before uvicorn keeps it; find the endpoint of the fast path
        (an app without ``authorize_endpoint``, or a wrapped one, has none)."""
        self._fast = getattr(self.app, "authorize_endpoint", None)
        self._idle = _Idle(self)
        keep_alive = _KEEP_ALIVE.get(self.server_state)
        if keep_alive is None:
            keep_alive = _KEEP_ALIVE[self.server_state] = Deadlines(self.timeout_keep_alive)
        self._keep_alive = keep_alive
        self._coalescing = _CoalescingTransport(transport)
        super().connection_made(self._coalescing)  # type: ignore[arg-type]

    def _unset_keepalive_if_required(self) -> None:
        """A request came (or the connection ends): no keep-alive deadline any more."""
        self._keep_alive.forget(self._idle)

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive deadline goes on the server's shared timer
        (``Deadlines``) instead of a ``call_later`` armed per response and cancelled by
        the next request (1.9 us of CPU per request on uvloop)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request waits: start it
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._keep_alive.watch(self._idle)

    def on_message_begin(self) -> None:
        """As uvicorn's, without the ASGI scope: only a request that takes the ASGI way
        needs one (``_asgi_scope``)."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        """uvicorn's scope of the current request, built as its ``on_message_begin``
        does (which also starts the request's URL and headers anew: they are kept)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        """Start a fast answer, or hand the request to uvicorn's ASGI cycle."""
        fast = self._fast
        parser = self.parser
        if (
            fast is not None
            and self.url.startswith(FAST_PREFIX)
            and self.limit_concurrency is None
            and parser.get_method() == b"GET"
            and parser.get_http_version() == "1.1"
            and not parser.should_upgrade()
        ):
            accept = b""
            for name, value in self.headers:
                if name == b"accept":
                    accept = value
            request = fast.plain_get(self.url[len(FAST_PREFIX) :], accept)
            if request is not None:
                self._queue_fast(request)
                return
        self._asgi_scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """A GET's body is not read (as on the ASGI way); uvicorn's for the rest."""
        current: object = self.cycle
        if type(current) is not _FastCycle:
            super().on_body(body)

    def _queue_fast(self, request: AuthorizationRequest) -> None:
        cycle = _FastCycle(self, self.parser.should_keep_alive())
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_fast(cycle, request)
        else:  # pipelined: answered in order, after the one in flight
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, request))  # type: ignore[arg-type]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """uvicorn (0.45 and later) starts queued (pipelined) requests here: a fast one
        too."""
        if type(cycle) is _FastCycle:
            self._start_fast(cycle, app)
        else:
            super()._start_asgi_task(cycle, app)

    def _start_fast(self, cycle: _FastCycle, request: AuthorizationRequest) -> None:
        fast = self._fast
        assert fast is not None
        if not fast.start_json(request, cycle.answer):
            self._run(self._answer(cycle, request))

    def _run(self, answering: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(answering)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _answer(self, cycle: _FastCycle, request: AuthorizationRequest) -> None:
        fast = self._fast
        assert fast is not None
        try:
            status, body = await fast.answer_json(request)
        except Exception:  # a bug here must not leave the client waiting
            log.error("http authorize answer failed", call_id=request.call_id, exc_info=True)
            self._complete(cycle, failed=True)
            return
        await self._write_when_drained(cycle, status, body)

    def answered(self, cycle: _FastCycle, status: int, body: bytes) -> None:
        """Write the answer of ``cycle`` (its ``answer``); once the client has read
        enough (flow control), in a task, as the ASGI way waits."""
        if cycle.disconnected:
            return
        if self.flow.write_paused:
            self._run(self._write_when_drained(cycle, status, body))
        else:
            self._write(cycle, status, body)

    async def _write_when_drained(self, cycle: _FastCycle, status: int, body: bytes) -> None:
        if cycle.disconnected:
            return
        if self.flow.write_paused:
            await self.flow.drain()
        self._write(cycle, status, body)

    def _write(self, cycle: _FastCycle, status: int, body: bytes) -> None:
        try:
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += (name, b": ", value, b"\r\n")
            head.append(_JSON_HEADERS + b"%d\r\n" % len(body))
            if not cycle.keep_alive:
                head.append(_CLOSE)
            head += (b"\r\n", body)
            self._coalescing.write_now(b"".join(head))
        except Exception:  # a bug here must not leave the client waiting
            log.error("http authorize answer failed", exc_info=True)
            self._complete(cycle, failed=True)
            return
        self._complete(cycle)

    def _complete(self, cycle: _FastCycle, *, failed: bool = False) -> None:
        """The cycle is over; after a failure the connection is not kept."""
        if failed:
            cycle.keep_alive = False
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
