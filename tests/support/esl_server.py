"""A small scriptable FreeSWITCH event-socket server for tests, over real TCP on 127.0.0.1.

Scripted sessions (the default): send ``auth/request``, read ``auth <password>``; a wrong
password gets ``-ERR invalid``, a disconnect notice and EOF, like FreeSWITCH. Then every
command is recorded in ``received`` and answered by ``responder`` (return ``None`` to stay
silent). Tests push frames (events, notices, garbage) with :meth:`ESLTestServer.push`
and drop connections with :meth:`ESLTestServer.drop_all`.

Recorded sessions: connection *n* replays ``recordings[n]`` (a ``.esl`` fixture) when
given: its frames are sent in order, and before each ``command/reply`` or
``api/response`` frame the server waits for the client's next command, so the client
must send the recorded commands (``received`` tells which it sent). The stream ends
with EOF, as recorded.

Frame helpers build the wire bytes the way FreeSWITCH writes them (LF only, plain event
values URL-encoded, BACKGROUND_JOB with its inner ``Content-Length`` body).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

Responder = Callable[[str], bytes | None]

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
_REPLY_TYPES = (b"Content-Type: command/reply", b"Content-Type: api/response")
_job_numbers = itertools.count(1)


def command_reply(text: str, **headers: str) -> bytes:
    """A ``command/reply`` frame with ``Reply-Text: text`` (and extra headers)."""
    lines = ["Content-Type: command/reply", f"Reply-Text: {text}"]
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in headers.items()]
    return ("\n".join(lines) + "\n\n").encode()


def api_response(body: str) -> bytes:
    """An ``api/response`` frame carrying ``body``."""
    data = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def event_plain(headers: Iterable[tuple[str, str]], body: str = "") -> bytes:
    """A ``text/event-plain`` frame: URL-encoded header values, optional inner body."""
    lines = [f"{key}: {quote(value, safe=',/()')}" for key, value in headers]
    if body:
        inner = body.encode()
        text = "\n".join([*lines, f"Content-Length: {len(inner)}"]).encode() + b"\n\n" + inner
    else:
        text = ("\n".join(lines) + "\n\n").encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(text) + text


def channel_event(name: str, unique_id: str, sequence: int) -> bytes:
    """A small channel event (``Event-Name``, ``Unique-ID``, ``Event-Sequence``)."""
    return event_plain(
        [
            ("Event-Name", name),
            ("Unique-ID", unique_id),
            ("Event-Sequence", str(sequence)),
            ("Event-Date-Local", "2026-11-25 18:22:00"),
        ]
    )


def background_job(job_uuid: str, body: str) -> bytes:
    """The BACKGROUND_JOB event that ends job ``job_uuid`` with ``body``."""
    headers = [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", job_uuid)]
    return event_plain(headers, body)


def disconnect_notice(body: str = GOODBYE) -> bytes:
    """A ``text/disconnect-notice`` frame."""
    data = body.encode()
    return b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(data) + data


def bgapi_reply(job_uuid: str) -> bytes:
    """The ``command/reply`` FreeSWITCH sends for an accepted ``bgapi``."""
    return command_reply(f"+OK Job-UUID: {job_uuid}", Job_UUID=job_uuid)


def default_responder(command: str) -> bytes | None:
    """``+OK`` for ``event``, a status text for ``api status``, ``+OK\\n`` for other
    ``api``, a fresh Job-UUID for ``bgapi`` (no job result: tests push it), ``-ERR`` else."""
    words = command.split()
    if words[:1] == ["event"] and len(words) > 2:
        return command_reply(f"+OK event listener enabled {words[1]}")
    if words[:2] == ["api", "status"]:
        return api_response("UP 0 years, 0 days, 0 hours, 0 minutes, 1 second\nFreeSWITCH\n")
    if words[:1] == ["api"]:
        return api_response("+OK\n")
    if words[:1] == ["bgapi"]:
        return bgapi_reply(f"00000000-0000-4000-8000-{next(_job_numbers):012d}")
    return command_reply("-ERR command not found")


def split_frames(data: bytes) -> list[bytes]:
    """The frames of a recorded stream (header block, then ``Content-Length`` bytes)."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n\n", pos) + 2
        length = 0
        for line in data[pos:end].split(b"\n"):
            if line.startswith(b"Content-Length: "):
                length = int(line.split(b": ", 1)[1])
        frames.append(data[pos : end + length])
        pos = end + length
    return frames


@dataclass
class ESLTestServer:
    """A scriptable ESL server on 127.0.0.1 (see the module docstring)."""

    password: str = "ClueCon"
    responder: Responder = default_responder
    recordings: list[bytes] = field(default_factory=list)
    chunking: str = "frames"  # "frames" or "random" (1..97 bytes per write)
    seed: int = 0
    received: list[str] = field(default_factory=list)
    connections: int = 0
    _seen: asyncio.Event = field(default_factory=asyncio.Event)
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

    async def push(self, *frames: bytes) -> None:
        """Send raw bytes to the newest open connection."""
        writer = self._writers[-1]
        for frame in frames:
            writer.write(frame)
        await writer.drain()

    def commands(self, prefix: str) -> list[str]:
        """Every received command starting with ``prefix``, in order."""
        return [command for command in self.received if command.startswith(prefix)]

    async def wait_for_command(self, prefix: str, count: int = 1) -> str:
        """The ``count``-th received command starting with ``prefix`` (10 s at most)."""
        async with asyncio.timeout(10):
            while True:
                found = self.commands(prefix)
                if len(found) >= count:
                    return found[count - 1]
                self._seen.clear()
                await self._seen.wait()

    async def wait_for_connections(self, count: int) -> None:
        """Wait until ``count`` connections were accepted (10 s at most)."""
        async with asyncio.timeout(10):
            while self.connections < count:
                self._seen.clear()
                await self._seen.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.connections
        self.connections += 1
        self._seen.set()
        self._writers.append(writer)
        rng = random.Random(self.seed + 1000 * index)
        try:
            if index < len(self.recordings):
                await self._replay(reader, writer, split_frames(self.recordings[index]), rng)
            else:
                await self._script(reader, writer)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(ValueError):
                self._writers.remove(writer)

    async def _script(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(AUTH_REQUEST)
        auth = await self._read_command(reader)
        if auth != f"auth {self.password}":
            writer.write(command_reply("-ERR invalid") + disconnect_notice())
            await writer.drain()
            return
        writer.write(command_reply("+OK accepted"))
        while True:
            reply = self.responder(await self._read_command(reader))
            if reply is not None:
                writer.write(reply)
                await writer.drain()

    async def _replay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        frames: list[bytes],
        rng: random.Random,
    ) -> None:
        for frame in frames:
            if frame.startswith(_REPLY_TYPES):
                await self._read_command(reader)
            if self.chunking == "frames":
                writer.write(frame)
            else:
                pos = 0
                while pos < len(frame):
                    size = rng.randint(1, 97)
                    writer.write(frame[pos : pos + size])
                    await writer.drain()
                    pos += size
            await writer.drain()

    async def _read_command(self, reader: asyncio.StreamReader) -> str:
        block = await reader.readuntil(b"\n\n")
        command = block[:-2].decode()
        self.received.append(command)
        self._seen.set()
        return command
