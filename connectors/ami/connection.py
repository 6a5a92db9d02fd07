"""One AMI TCP connection: banner, the read loop, ActionID matching, list collection.

The read loop parses bytes as they come; a ``Response`` resolves the pending action with
its ActionID; a list action (``EventList: start``) collects the events carrying its
ActionID until the ``...Complete`` event; every other event goes to ``on_event`` in
stream order. When the connection ends, every pending action fails with
:class:`AMIConnectionLost` (actions are never replayed). Errors: see ``errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from connectors.ami.errors import AMIConnectionLost, AMIProtocolError
from connectors.ami.parser import BANNER_PREFIX, AMIMessage, AMIParseError, AMIParser
from connectors.reconnect import mark_retrieved

log = structlog.get_logger(__name__)

_READ_SIZE = 65536


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[tuple[AMIMessage, list[AMIMessage]]]
    is_list: bool
    started: bool = False
    response: AMIMessage | None = None
    items: list[AMIMessage] = field(default_factory=list)


def encode_action(name: str, action_id: str, fields: dict[str, object]) -> bytes:
    """The wire bytes of one action; lists give repeated lines (``Variable``)."""
    lines = [f"Action: {name}", f"ActionID: {action_id}"]
    for key, value in fields.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            text = str(item)
            if "\r" in key or "\n" in key or ":" in key or "\r" in text or "\n" in text:
                raise AMIProtocolError(f"action {name}: field {key!r} contains a line break")
            lines.append(f"{key}: {text}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class AMIConnection:
    """A connected, banner-checked AMI socket with its read loop (internal to the client)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[AMIMessage], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._parser = AMIParser(expect_banner=False, first_line=2)
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.banner = ""

    @classmethod
    async def open(
        cls, host: str, port: int, connect_timeout: float, on_event: Callable[[AMIMessage], None]
    ) -> AMIConnection:
        """Connect, read and check the banner, start the read loop."""
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    line = await reader.readuntil(b"\r\n")
                except BaseException:
                    writer.close()
                    raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise AMIConnectionLost(f"cannot connect to AMI {host}:{port}: {exc!r}") from exc
        except asyncio.LimitOverrunError as exc:
            raise AMIProtocolError(f"no AMI banner from {host}:{port}") from exc
        banner = line[:-2].decode("utf-8", "replace")
        if not banner.startswith(BANNER_PREFIX):
            writer.close()
            raise AMIProtocolError(f"not an AMI banner from {host}:{port}: {banner[:80]!r}")
        conn = cls(reader, writer, on_event)
        conn.banner = banner
        conn._task = asyncio.create_task(conn._read_loop(), name=f"ami-read-{host}:{port}")
        return conn

    @property
    def is_open(self) -> bool:
        """True until the connection is lost or closed."""
        return not self.lost.done()

    async def request(
        self, name: str, action_id: str, fields: dict[str, object], *, is_list: bool = False
    ) -> tuple[AMIMessage, list[AMIMessage]]:
        """Send an action and wait for its response (and list items)."""
        if not self.is_open:
            raise AMIConnectionLost(f"action {name}: not connected")
        data = encode_action(name, action_id, fields)
        future: asyncio.Future[tuple[AMIMessage, list[AMIMessage]]]
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)  # a failed write reports the loss itself
        self._pending[action_id] = _Pending(future, is_list)
        try:
            self._writer.write(data)
            await self._writer.drain()
            return await future
        except (OSError, RuntimeError) as exc:
            raise AMIConnectionLost(f"action {name}: connection lost: {exc!r}") from exc
        finally:
            self._pending.pop(action_id, None)

    def abort(self, reason: str) -> None:
        """Drop the connection now (the read loop ends and reports ``reason``)."""
        self._finish(reason)
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close the socket and wait for the read loop to end."""
        self._finish("closed")
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read_loop(self) -> None:
        reason = "eof"
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                for item in self._parser.feed(data):
                    if isinstance(item, AMIMessage):
                        self._dispatch(item)
                    elif isinstance(item, AMIParseError):
                        log.warning(
                            "ami.parse_error",
                            line_number=item.line_number,
                            line=item.line[:200],
                            reason=item.reason,
                        )
        except OSError as exc:
            reason = f"error: {exc!r}"
        leftover = self._parser.leftover
        if leftover:
            log.warning("ami.truncated_stream", leftover_bytes=len(leftover))
        self._finish(reason)

    def _dispatch(self, msg: AMIMessage) -> None:
        action_id = msg.get("ActionID")
        if "Event" not in msg:  # a Response (OriginateResponse events carry Response too)
            pending = self._pending.get(action_id) if action_id else None
            if pending is None:
                log.debug("ami.unmatched_response", action_id=action_id)
                return
            if pending.is_list and msg.get("EventList") == "start":
                pending.started = True
                pending.response = msg
            elif not pending.future.done():
                pending.future.set_result((msg, []))
            return
        if action_id:
            pending = self._pending.get(action_id)
            if pending is not None and pending.started:
                if msg.get("EventList") == "Complete":
                    if not pending.future.done() and pending.response is not None:
                        pending.future.set_result((pending.response, pending.items))
                else:
                    pending.items.append(msg)
                return
        self._on_event(msg)

    def _finish(self, reason: str) -> None:
        if self.lost.done():
            return
        self.lost.set_result(reason)
        for action_id, pending in list(self._pending.items()):
            if not pending.future.done():
                pending.future.set_exception(
                    AMIConnectionLost(f"connection lost ({reason}) before answer to {action_id}")
                )
