"""One FreeSWITCH event-socket TCP connection: greeting, read loop, in-order replies, jobs.

The read loop feeds bytes to :class:`ESLParser` as they come. ESL replies carry no id:
every ``command/reply`` and ``api/response`` answers the OLDEST pending command (a FIFO
of futures; a command whose caller gave up stays in the FIFO until its answer comes, so
later answers still line up). A ``bgapi`` command's reply carries a ``Job-UUID``; its
result comes later as a ``BACKGROUND_JOB`` event with that ``Job-UUID`` (the job is
registered as soon as the reply is read, so the event cannot overtake it). Events are
decoded and passed to ``on_event`` in stream order; BACKGROUND_JOB events too.
After a reply resolves its caller, the read loop yields once before the next frame: a
task that awaited the command runs before any later event is passed on, so whatever it
queues at once (a ``Marker``) lands exactly where the reply was in the stream.

``text/disconnect-notice`` (and ``text/rude-rejection``) is logged and ends the
connection. A frame the parser cannot read while a command is pending ends the
connection too: it may have been that command's answer, and a shifted FIFO would hand
every later caller someone else's answer. When the connection ends, every pending command
and job fails with :class:`ESLConnectionLost` (commands are never replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from connectors.esl.errors import (
    ESLAuthenticationError,
    ESLConnectionLost,
    ESLError,
    ESLProtocolError,
)
from connectors.esl.parser import (
    ESLEvent,
    ESLFrame,
    ESLParseError,
    ESLParser,
    decode_event,
    encode_command,
)
from connectors.reconnect import mark_retrieved

log = structlog.get_logger(__name__)

_READ_SIZE = 65536
_EXCERPT = 200
_REPLY_TYPES = frozenset({"command/reply", "api/response"})
_EVENT_TYPES = frozenset({"text/event-plain", "text/event-json"})
_NOTICE_TYPES = frozenset({"text/disconnect-notice", "text/rude-rejection"})
_JOB_IN_REPLY = re.compile(r"Job-UUID: (\S+)")
_EVENT_NAME = re.compile(rb"Event-Name\"?:\s*\"?([A-Za-z0-9_:]+)")


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[ESLFrame]
    is_job: bool


def job_uuid_of(frame: ESLFrame) -> str:
    """The ``Job-UUID`` a ``bgapi`` reply names ("" when none, e.g. on ``-ERR``)."""
    job = frame.headers.get("Job-UUID", "")
    if job:
        return job
    match = _JOB_IN_REPLY.search(frame.reply_text)
    return match.group(1) if match else ""


class ESLConnection:
    """A connected, greeted ESL socket with its read loop (internal to the client)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[ESLEvent], None],
        peer: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._peer = peer
        self._parser = ESLParser()
        self._pending: deque[_Pending] = deque()
        self._jobs: dict[str, asyncio.Future[ESLEvent]] = {}
        self._task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[str] = loop.create_future()
        self._greeted: asyncio.Future[None] = loop.create_future()
        self._greeted.add_done_callback(mark_retrieved)

    @classmethod
    async def open(
        cls, host: str, port: int, connect_timeout: float, on_event: Callable[[ESLEvent], None]
    ) -> ESLConnection:
        """Connect, start the read loop and wait for the switch's ``auth/request``."""
        peer = f"{host}:{port}"
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise ESLConnectionLost(f"cannot connect to ESL {peer}: {exc!r}") from exc
        conn = cls(reader, writer, on_event, peer)
        conn._task = asyncio.create_task(conn._read_loop(), name=f"esl-read-{peer}")
        try:
            async with asyncio.timeout(connect_timeout):
                await conn._greeted
        except TimeoutError as exc:
            await conn.close()
            raise ESLProtocolError(f"no auth/request from {peer} in {connect_timeout}s") from exc
        except ESLError:
            await conn.close()
            raise
        return conn

    @property
    def is_open(self) -> bool:
        """True until the connection is lost or closed."""
        return not self.lost.done()

    async def request(self, command: str, *, job: bool = False) -> ESLFrame:
        """Send one command and wait for the reply that answers it (the next one in order).

        With ``job=True`` (a ``bgapi``) the job named by the reply is registered before
        any later frame is read; wait for its result with :meth:`job_result`.
        ValueError when the command cannot be sent (see ``encode_command``).
        """
        data = encode_command(command)
        if not self.is_open:
            raise ESLConnectionLost(f"{_verb(command)}: not connected")
        future: asyncio.Future[ESLFrame] = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)
        self._pending.append(_Pending(future, job))  # appended and written with no await
        try:
            self._writer.write(data)  # between: FIFO order is wire order
            await self._writer.drain()
            return await future
        except (OSError, RuntimeError) as exc:
            raise ESLConnectionLost(f"{_verb(command)}: connection lost: {exc!r}") from exc
        finally:
            if not future.done():
                future.cancel()  # the caller gave up; its answer will be read and dropped

    async def job_result(self, job_uuid: str) -> ESLEvent:
        """The BACKGROUND_JOB event of a job registered by ``request(..., job=True)``."""
        future = self._jobs.get(job_uuid)
        if future is None:
            raise ESLConnectionLost(f"job {job_uuid}: not pending on this connection")
        try:
            return await future
        finally:
            self._jobs.pop(job_uuid, None)

    def abort(self, reason: str) -> None:
        """Drop the connection now (the read loop ends; ``lost`` reports ``reason``)."""
        self._finish(reason)
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close the socket and wait for the read loop to end."""
        self._finish("closed")
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the read loop ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "eof"
        try:
            while self.is_open:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                for item in self._parser.feed(data):
                    if isinstance(item, ESLFrame):
                        if self._handle(item):
                            await asyncio.sleep(0)  # let the answered caller run first
                    else:
                        self._parse_error(item)
                    if not self.is_open:
                        break
        except OSError as exc:
            reason = f"error: {exc!r}"
        leftover = self._parser.leftover
        if leftover and self.is_open:
            log.warning("esl.truncated_stream", peer=self._peer, leftover_bytes=len(leftover))
        self._finish(reason)

    def _handle(self, frame: ESLFrame) -> bool:
        """Act on one frame; True when it answered a waiting caller."""
        content_type = frame.content_type
        if content_type in _EVENT_TYPES:
            self._event(frame)
        elif content_type in _REPLY_TYPES:
            return self._reply(frame)
        elif content_type == "auth/request":
            if self._greeted.done():
                log.warning("esl.unexpected_auth_request", peer=self._peer)
            else:
                self._greeted.set_result(None)
        elif content_type in _NOTICE_TYPES:
            notice = frame.body.decode("utf-8", "replace").strip()
            log.warning(
                "esl.disconnect_notice", peer=self._peer, content_type=content_type, notice=notice
            )
            first_line = notice.partition("\n")[0]
            if content_type == "text/rude-rejection" and not self._greeted.done():
                self._greeted.set_exception(
                    ESLAuthenticationError(f"ESL {self._peer} rejected the connection: {notice}")
                )
            self.abort(f"disconnect notice: {first_line}")
        elif not self._greeted.done():
            self._greeted.set_exception(
                ESLProtocolError(f"expected auth/request from {self._peer}, got {content_type!r}")
            )
            self.abort(f"protocol error: {content_type!r} before auth/request")
        else:
            log.debug("esl.ignored_frame", peer=self._peer, content_type=content_type)
        return False

    def _reply(self, frame: ESLFrame) -> bool:
        if not self._pending:
            log.warning(
                "esl.unexpected_reply",
                peer=self._peer,
                content_type=frame.content_type,
                reply=(frame.reply_text or frame.body.decode("utf-8", "replace"))[:_EXCERPT],
            )
            return False
        pending = self._pending.popleft()
        if pending.future.done():  # its caller gave up (timeout, cancellation)
            return False
        if pending.is_job:
            job = job_uuid_of(frame)
            if job:
                future: asyncio.Future[ESLEvent] = asyncio.get_running_loop().create_future()
                future.add_done_callback(mark_retrieved)
                self._jobs[job] = future
        pending.future.set_result(frame)
        return True

    def _event(self, frame: ESLFrame) -> None:
        try:
            event = decode_event(frame)
        except ValueError as exc:
            match = _EVENT_NAME.search(frame.body)
            log.warning(
                "esl.bad_event",
                peer=self._peer,
                event_name=match.group(1).decode() if match else "",
                error=str(exc),
            )
            return
        if event.name == "BACKGROUND_JOB":
            job = self._jobs.get(event.get("Job-UUID", ""))
            if job is not None and not job.done():
                job.set_result(event)
        self._on_event(event)

    def _parse_error(self, item: ESLParseError) -> None:
        log.warning(
            "esl.parse_error",
            peer=self._peer,
            offset=item.offset,
            text=item.text,
            reason=item.reason,
        )
        if self._pending:
            self.abort("protocol error: unreadable frame while a command was pending")

    def _finish(self, reason: str) -> None:
        if self.lost.done():
            return
        self.lost.set_result(reason)
        if not self._greeted.done():
            self._greeted.set_exception(
                ESLConnectionLost(f"ESL {self._peer} closed before auth/request ({reason})")
            )
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(
                    ESLConnectionLost(f"connection lost ({reason}) before the answer")
                )
        for job, future in self._jobs.items():
            if not future.done():
                future.set_exception(
                    ESLConnectionLost(f"connection lost ({reason}) before job {job} ended")
                )


def _verb(command: str) -> str:
    """The first words of a command, for messages (never an ``auth`` argument)."""
    words = command.split(None, 2)
    if not words:
        return "command"
    if words[0] in ("auth", "userauth"):
        return words[0]
    return " ".join(words[:2]) if words[0] in ("api", "bgapi") else words[0]
