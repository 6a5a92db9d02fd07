"""The FastAGI authorization server: Asterisk's ``AGI(agi://host:4573/authorize,...)``.

One asyncio task per connection (references kept, so ``close()`` can wait for them),
the header block read under ``header_timeout`` with bounded line and block sizes (read in
chunks, not line by line). The answer leaves as one write of every ``SET VARIABLE``
command plus a half-close, and the replies are then awaited in order under
``command_timeout``: one round trip per call (why Asterisk runs them all:
``daemon.fastagi_protocol``). A peer that disconnects early, sends garbage or stalls only
ever holds its own task; EOF ends the session at once.
The wire format lives in ``daemon.fastagi_protocol``; errors are drawn there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from daemon.authorization import (
    AuthorizationDecision,
    AuthorizationRequest,
    Authorizer,
    Reason,
)
from daemon.deadlines import Deadlines
from daemon.fastagi_protocol import (
    AGENT_SCRIPT,
    MAX_HEADER_LINES,
    AGIEnvironment,
    FastAGIBadRequest,
    FastAGIProtocolError,
    FastAGISessionEnded,
    agent_variables,
    answer_block,
    decision_variables,
    deny_variables,
    parse_environment,
    parse_reply,
    to_agent_request,
    to_authorization_request,
)

log = structlog.get_logger(__name__)

MAX_LINE_BYTES = 4096
MAX_HEADER_BYTES = 16384
READ_BYTES = 4096


class _LineTooLong(Exception):
    """A line longer than ``MAX_LINE_BYTES``."""


class _Lines:
    """The lines of a stream, read a chunk at a time (one ``read`` per chunk, not per line)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = b""
        self._start = 0

    async def next(self) -> bytes | None:
        """The next line with its ``\\n``; None at EOF before a whole line."""
        while True:
            end = self._buffer.find(b"\n", self._start)
            if end >= 0:
                if end - self._start > MAX_LINE_BYTES:
                    raise _LineTooLong()
                line = self._buffer[self._start : end + 1]
                self._start = end + 1
                return line
            if len(self._buffer) - self._start > MAX_LINE_BYTES:
                raise _LineTooLong()
            chunk = await self._reader.read(READ_BYTES)
            if not chunk:
                return None
            self._buffer = self._buffer[self._start :] + chunk
            self._start = 0


class FastAGIServer:
    """Serves ``authorize`` FastAGI sessions with one ``Authorizer``."""

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        switch_for_peer: Callable[[str], str] | None = None,
        default_switch_id: str,
        header_timeout: float = 5.0,
        command_timeout: float = 5.0,
        authorize_timeout: float = 4.0,
        agent_authorizer: Callable[[str, str], Awaitable[tuple[bool, str]]] | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._agent_authorizer = agent_authorizer
        self._host = host
        self._requested_port = port
        self._switch_for_peer = switch_for_peer
        self._default_switch_id = default_switch_id
        # one timer per limit for every session (daemon.deadlines), not one per session
        self._deadlines = Deadlines(authorize_timeout)  # calls' and agents' authorizations
        self._header_deadlines = Deadlines(header_timeout)
        self._command_deadlines = Deadlines(command_timeout)
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("FastAGIServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        """Connections currently being served."""
        return len(self._sessions)

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("FastAGIServer already started")
        self._server = await asyncio.start_server(
            self._on_connect, self._host, self._requested_port, limit=MAX_LINE_BYTES
        )
        log.info("fastagi server listening", host=self._host, port=self.port)

    async def close(self, grace_period: float = 5.0) -> None:
        """Stop accepting; let in-flight sessions run up to ``grace_period`` s, then cancel."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        pending = set(self._sessions)
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace_period)
            for task in still_running:
                task.cancel()
            if still_running:
                log.warning("fastagi sessions cancelled at close", count=len(still_running))
                await asyncio.gather(*still_running, return_exceptions=True)
        await server.wait_closed()
        log.info("fastagi server closed")

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
            task.add_done_callback(self._sessions.discard)
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        try:
            await self._serve_session(reader, writer, peer_host)
        except FastAGISessionEnded as exc:
            log.debug("fastagi session ended by peer", peer=peer_host, detail=str(exc))
        except FastAGIProtocolError as exc:
            log.warning("fastagi peer sent no valid AGI", peer=peer_host, error=str(exc))
        except TimeoutError:
            log.debug("fastagi peer timed out", peer=peer_host)
        except (ConnectionError, OSError) as exc:
            log.debug("fastagi connection lost", peer=peer_host, error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_host: str
    ) -> None:
        lines = _Lines(reader)
        env = await self._header_deadlines.run(_read_environment(lines))
        call_id = env.get("uniqueid")
        if env.script == AGENT_SCRIPT and self._agent_authorizer is not None:
            await self._answer(lines, writer, await self._decide_agent(env, peer_host))
            return
        with structlog.contextvars.bound_contextvars(call_id=call_id):
            try:
                request = to_authorization_request(env, switch_id=self._switch_id(peer_host))
            except FastAGIBadRequest as exc:
                log.warning("fastagi bad request", call_id=call_id, peer=peer_host, error=str(exc))
                variables = deny_variables(Reason.BAD_REQUEST)
            else:
                decision = await self._decide(request)
                variables = decision_variables(decision)
            await self._answer(lines, writer, variables)

    async def _decide_agent(self, env: AGIEnvironment, peer_host: str) -> list[tuple[str, str]]:
        """The seat answer of an ``authorize_agent`` session."""
        assert self._agent_authorizer is not None
        try:
            tenant, agent = to_agent_request(env)
        except FastAGIBadRequest as exc:
            log.warning("fastagi bad agent request", peer=peer_host, error=str(exc))
            return agent_variables(False, Reason.BAD_REQUEST.value)
        try:
            allowed, reason = await self._deadlines.run(self._agent_authorizer(tenant, agent))
        except Exception:  # the boundary: any failure answers SERVICE_UNAVAILABLE
            log.error("agent authorizer failed", tenant=tenant, agent=agent, exc_info=True)
            return agent_variables(False, Reason.SERVICE_UNAVAILABLE.value)
        return agent_variables(allowed, reason)

    def _switch_id(self, peer_host: str) -> str:
        if self._switch_for_peer is not None:
            switch_id = self._switch_for_peer(peer_host)
            if switch_id:
                return switch_id
        return self._default_switch_id

    async def _decide(self, request: AuthorizationRequest) -> AuthorizationDecision:
        try:
            decision = await self._deadlines.run(self._authorizer.authorize(request))
        except Exception:  # the boundary: any failure (a timeout too) answers SERVICE_UNAVAILABLE
            log.error(
                "authorizer failed",
                call_id=request.call_id,
                account=request.account,
                exc_info=True,
            )
            return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE)
        log.debug(
            "fastagi authorization",
            call_id=request.call_id,
            allowed=decision.allowed,
            reason=str(decision.reason),
        )
        return decision

    async def _answer(
        self, lines: _Lines, writer: asyncio.StreamWriter, variables: list[tuple[str, str]]
    ) -> None:
        """Send every command at once, half-close, then read one reply per command."""
        writer.write(answer_block(variables))
        if writer.can_write_eof():
            writer.write_eof()
        await self._command_deadlines.run(_read_replies(lines, variables))


async def _read_replies(lines: _Lines, variables: list[tuple[str, str]]) -> None:
    """One ``200`` reply per command sent; anything else ends the session."""
    for name, _ in variables:
        try:
            line = await lines.next()
        except _LineTooLong as exc:
            raise FastAGIProtocolError(f"reply to {name}: longer than the limit") from exc
        if line is None:
            raise FastAGISessionEnded("EOF while waiting for a reply")
        reply = parse_reply(line.decode("utf-8", errors="replace"))
        if reply.code != 200:
            raise FastAGISessionEnded(f"unexpected reply {reply.code} to {name}")


async def _read_environment(lines: _Lines) -> AGIEnvironment:
    """Read ``agi_*`` lines up to the blank line; EOF ends quietly, garbage raises."""
    found: list[str] = []
    total = 0
    while True:
        try:
            raw = await lines.next()
        except _LineTooLong as exc:
            raise FastAGIProtocolError(f"line {len(found) + 1}: longer than the limit") from exc
        if raw is None:
            raise FastAGISessionEnded(f"EOF after {len(found)} header lines")
        total += len(raw)
        if total > MAX_HEADER_BYTES:
            raise FastAGIProtocolError(f"header block larger than {MAX_HEADER_BYTES} bytes")
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise FastAGIProtocolError(f"line {len(found) + 1}: not UTF-8") from exc
        if not line:
            if not found:
                raise FastAGIProtocolError("line 1: empty header block")
            return parse_environment(found)
        found.append(line)
        if len(found) > MAX_HEADER_LINES:
            return parse_environment(found)  # raises: too many lines
