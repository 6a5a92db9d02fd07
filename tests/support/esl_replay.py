"""A TCP server on 127.0.0.1 that replays recorded FreeSWITCH ESL streams (``.esl``).

Connection *n* gets ``streams[n]`` (nothing once they are used up), written whole, in
random-sized chunks or one byte at a time, then the server closes it (like the switch
after ``exit``; gracefully, see :func:`tests.support.linger.linger`) unless
``keep_open``. With ``password`` set it plays the handshake first: it sends the recorded
``auth/request`` frame, waits for ``auth <password>`` (answering ``-ERR invalid`` and
closing on anything else), then sends the rest of the recording, whose next frame is the
recorded ``+OK accepted``. Every command the client sends is kept in ``received``; the
recording already holds the switch's replies.

:func:`read_events` is the client side used by tests and benches: it reads a connection
to EOF with asyncio streams and feeds ``ESLParser -> decode_event -> ESLTranslator``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

from connectors.esl.parser import ESLParseError, ESLParser, decode_event
from connectors.esl.translator import ESLTranslator
from connectors.events import Event
from tests.support.linger import linger

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
AUTH_DENIED = b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"


@dataclass
class ESLReplayServer:
    """Replays one recorded stream per accepted connection (see module docstring)."""

    streams: list[bytes]
    chunking: str = "whole"  # "whole", "random" (1..max_chunk bytes) or "bytes" (1 byte)
    max_chunk: int = 1500
    password: str | None = None
    keep_open: bool = False
    seed: int = 0
    received: list[str] = field(default_factory=list)
    connections: int = 0
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
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.connections
        self.connections += 1
        self._writers.append(writer)
        data = self.streams[index] if index < len(self.streams) else b""
        listener: asyncio.Task[None] | None = None
        try:
            if self.password is not None:
                data = data.removeprefix(AUTH_REQUEST)
                writer.write(AUTH_REQUEST)
                command = await self._read_command(reader)
                if command != f"auth {self.password}":
                    writer.write(AUTH_DENIED)
                    await writer.drain()
                    return
            listener = asyncio.create_task(self._listen(reader))
            await self._send(writer, data, random.Random(self.seed + index))
            if self.keep_open:
                await listener
            else:
                await linger(writer, listener)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
        finally:
            if listener is not None:
                listener.cancel()
                # the client may have closed first: its EOF ended the listener
                with contextlib.suppress(
                    asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError
                ):
                    await listener
            if not writer.transport.is_closing():
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            self._tasks.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, rng: random.Random) -> None:
        if self.chunking == "whole":
            writer.write(data)
            await writer.drain()
            return
        pos = 0
        while pos < len(data):
            size = 1 if self.chunking == "bytes" else rng.randint(1, self.max_chunk)
            writer.write(data[pos : pos + size])
            await writer.drain()
            await asyncio.sleep(0)  # let the reader see this chunk on its own
            pos += size

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        while True:
            await self._read_command(reader)

    async def _read_command(self, reader: asyncio.StreamReader) -> str:
        block = await reader.readuntil(b"\n\n")
        command = block[:-2].decode()
        self.received.append(command)
        return command


@dataclass
class Replayed:
    """What a client saw on one or more replayed connections."""

    events: list[Event] = field(default_factory=list)
    errors: list[ESLParseError] = field(default_factory=list)
    frames: int = 0
    leftovers: list[bytes] = field(default_factory=list)


async def read_events(
    port: int,
    translator: ESLTranslator,
    result: Replayed | None = None,
    *,
    read_size: int = 65536,
) -> Replayed:
    """Read one connection to EOF, feeding every frame through parser and translator."""
    result = result if result is not None else Replayed()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    parser = ESLParser()
    try:
        while data := await reader.read(read_size):
            for item in parser.feed(data):
                if isinstance(item, ESLParseError):
                    result.errors.append(item)
                    continue
                result.frames += 1
                if item.content_type.startswith("text/event-"):
                    result.events.extend(translator.feed(decode_event(item)))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    result.leftovers.append(parser.leftover)
    return result
