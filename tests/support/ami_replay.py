"""A TCP server on 127.0.0.1 that replays recorded AMI streams (``.ami`` fixtures).

Connection *n* gets ``streams[n]`` (an empty stream once they are used up): the banner
line, then it waits for the client's Login, answers it with the recorded Login response
but the client's ActionID (or ``Authentication failed`` on wrong credentials), then sends
the rest of the recording, whole messages or in random-sized / 1-byte chunks, then closes
(every stream but the last; gracefully, see :func:`tests.support.linger.linger`) or
stays open. Other actions are answered by ``responder``
(default: ``Success``; return ``None`` to stay silent), between recorded messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.linger import linger

Action = dict[str, str]
Responder = Callable[[Action], bytes | None]

DEFAULT_BANNER = b"Asterisk Call Manager/11.0.0\r\n"
DEFAULT_LOGIN_OK = b"Response: Success\r\nActionID: x\r\nMessage: Authentication accepted\r\n\r\n"


def default_responder(action: Action) -> bytes | None:
    """Answer every action with Success (Ping with Pong)."""
    extra = "Ping: Pong\r\n" if action.get("Action") == "Ping" else ""
    return response(action, f"Response: Success\r\n{extra}")


def response(action: Action, body: str) -> bytes:
    """``body`` (ending in CRLF) with the action's ActionID, as one message."""
    return f"{body}ActionID: {action.get('ActionID', '')}\r\n\r\n".encode()


def split_recording(data: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(banner line, Login response, remaining messages each with its separator)."""
    banner, _, rest = data.partition(b"\r\n")
    parts = rest.split(b"\r\n\r\n")
    tail = parts.pop()  # bytes after the last separator (b"" on a clean recording)
    messages = [part + b"\r\n\r\n" for part in parts]
    if tail:
        messages.append(tail)
    login = messages.pop(0) if messages else DEFAULT_LOGIN_OK
    return banner + b"\r\n", login, messages


def with_action_id(message: bytes, action_id: str) -> bytes:
    """The message with its ActionID line replaced by ``action_id``."""
    lines = message.split(b"\r\n")
    out = [
        b"ActionID: " + action_id.encode() if line.startswith(b"ActionID: ") else line
        for line in lines
    ]
    return b"\r\n".join(out)


@dataclass
class AMIReplayServer:
    """Replays one recorded stream per accepted connection (see module docstring)."""

    streams: list[bytes]
    username: str = "billing"
    secret: str = "billing"
    chunking: str = "messages"  # "messages", "random" (1..97 bytes) or "bytes" (1 byte)
    keep_open: bool = True
    answer_login: bool = True
    responder: Responder = default_responder
    seed: int = 0
    received: list[Action] = field(default_factory=list)
    connections: int = 0
    action_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        """Listen on 127.0.0.1, port 0; return the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.drop_all()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def drop_all(self) -> None:
        """Abort every open connection (the client sees it as lost)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.connections
        self.connections += 1
        self._writers.append(writer)
        data = self.streams[index] if index < len(self.streams) else b""
        banner, login, messages = split_recording(data) if data else (DEFAULT_BANNER, b"", [])
        last = index >= len(self.streams) - 1
        try:
            await self._session(reader, writer, banner, login or DEFAULT_LOGIN_OK, messages, last)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        banner: bytes,
        login: bytes,
        messages: list[bytes],
        last: bool,
    ) -> None:
        writer.write(banner)
        action = await self._read_action(reader)
        if not self.answer_login:
            return
        if action.get("Username") != self.username or action.get("Secret") != self.secret:
            writer.write(response(action, "Response: Error\r\nMessage: Authentication failed\r\n"))
            await writer.drain()
            return
        writer.write(with_action_id(login, action.get("ActionID", "")))
        outbox: list[bytes] = []
        done = asyncio.Event()
        listener = asyncio.create_task(self._answer(reader, writer, outbox, done))
        try:
            rng = random.Random(self.seed + 1000 * self.connections)
            for message in messages:
                await self._send(writer, message, rng)
                while outbox:
                    writer.write(outbox.pop(0))
            while outbox:
                writer.write(outbox.pop(0))
            done.set()
            await writer.drain()
            if last and self.keep_open:
                await listener
            else:
                await linger(writer, listener)
        finally:
            listener.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError
            ):
                await listener

    async def _send(self, writer: asyncio.StreamWriter, message: bytes, rng: random.Random) -> None:
        if self.chunking == "messages":
            writer.write(message)
            await writer.drain()
            return
        pos = 0
        while pos < len(message):
            size = 1 if self.chunking == "bytes" else rng.randint(1, 97)
            writer.write(message[pos : pos + size])
            await writer.drain()
            pos += size

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        outbox: list[bytes],
        done: asyncio.Event,
    ) -> None:
        while True:
            action = await self._read_action(reader)
            reply = self.responder(action)
            if reply is None:
                continue
            if done.is_set():
                writer.write(reply)
                await writer.drain()
            else:
                outbox.append(reply)

    async def _read_action(self, reader: asyncio.StreamReader) -> Action:
        block = await reader.readuntil(b"\r\n\r\n")
        action: Action = {}
        for line in block.decode().split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep:
                action.setdefault(key, value)
        self.received.append(action)
        self.action_seen.set()
        return action

    async def wait_for_action(self, name: str) -> Action:
        """The first received action called ``name`` (waits until it arrives)."""
        while True:
            for action in self.received:
                if action.get("Action") == name:
                    return action
            self.action_seen.clear()
            await self.action_seen.wait()
