"""Reconnecting FreeSWITCH event-socket client (inbound): auth, subscription, commands.

``run()`` connects, waits for ``auth/request``, sends ``auth``, subscribes
(``event plain|json ...``), checks the switch every ``keepalive_interval`` with
``api status`` (no answer within ``keepalive_timeout`` drops the connection) and
reconnects with jittered exponential backoff until ``close()``. A refused ``auth`` is
logged at ERROR and retried with the same backoff. Commands are answered in order
(``connection.py``); a command pending on a lost connection fails with
:class:`ESLConnectionLost` and is never replayed. Events (:class:`ESLEvent`) and the
connector state (``SwitchConnected`` first, ``SwitchDisconnected`` last) reach one async
handler, in stream order, from one dispatcher task (``inject`` adds a ``Marker``); a
handler that raises is logged with the event name and the stream goes on. The password
never appears in logs or errors.
The switch answers one command at a time, so a long blocking ``api`` (use ``bgapi``)
delays the keepalive answer as well.
Errors (``errors.py``): ESLError -> ESLAuthenticationError, ESLConnectionLost,
ESLProtocolError, ESLCommandError.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from connectors.esl.connection import ESLConnection, job_uuid_of
from connectors.esl.errors import (
    ESLAuthenticationError,
    ESLCommandError,
    ESLConnectionLost,
    ESLError,
    ESLProtocolError,
)
from connectors.esl.parser import ESLEvent, ESLFrame
from connectors.events import Marker, SwitchConnected, SwitchDisconnected
from connectors.reconnect import Backoff, EventStream, cancel_task, serve_until, sleep_unless

log = structlog.get_logger(__name__)

ClientItem = ESLEvent | SwitchConnected | SwitchDisconnected | Marker
Handler = Callable[[ClientItem], Awaitable[None]]

DEFAULT_EVENTS: tuple[str, ...] = (
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_PARK",
    "CHANNEL_UUID",
    "HEARTBEAT",
    "BACKGROUND_JOB",
    "CUSTOM",
    "callcenter::info",
)
_ERROR_PREFIXES = ("-ERR", "-USAGE")
_EXCERPT = 120


@dataclass(frozen=True, slots=True)
class ESLSettings:
    """Where and how to connect; times in seconds.

    ``events`` are the words after ``event plain|json``: event names, then ``CUSTOM``
    followed by subclass names (FreeSWITCH reads every word after ``CUSTOM`` as a
    subclass). ``BACKGROUND_JOB`` is added before ``CUSTOM`` when missing (``bgapi``
    needs it) unless ``ALL`` is asked for.
    """

    host: str
    port: int
    password: str = field(repr=False)
    events: tuple[str, ...] = DEFAULT_EVENTS
    event_format: Literal["plain", "json"] = "plain"
    keepalive_interval: float = 20.0
    keepalive_timeout: float = 10.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    command_timeout: float = 10.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.password or any(c in self.password for c in "\r\n"):
            raise ValueError("ESL password must be non-empty and on one line")
        if self.event_format not in ("plain", "json"):
            raise ValueError(f"event_format must be 'plain' or 'json': {self.event_format!r}")
        if not self.events:
            raise ValueError("events must name at least one event")
        for word in self.events:
            _check_word("events", word)

    def subscription(self) -> str:
        """The ``event ...`` command this client subscribes with."""
        words = list(self.events)
        if "ALL" not in words and "BACKGROUND_JOB" not in words:
            at = words.index("CUSTOM") if "CUSTOM" in words else len(words)
            words.insert(at, "BACKGROUND_JOB")
        return f"event {self.event_format} {' '.join(words)}"


class ESLClient:
    """An inbound event-socket session to one FreeSWITCH, reconnecting under ``run()``."""

    def __init__(
        self,
        settings: ESLSettings,
        handler: Handler,
        switch_id: str,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._switch_id = switch_id
        self._rng = rng or random.Random()
        self._conn: ESLConnection | None = None
        self._stream: EventStream[ESLEvent | SwitchConnected | SwitchDisconnected] = (
            EventStream(handler, self._handler_failed, "esl-dispatch")
        )
        self._keepalive: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    # -- one connection --------------------------------------------------------------

    async def connect(self) -> None:
        """Open the TCP connection and wait for ``auth/request`` (ESLConnectionLost, ...)."""
        self._stream.start()
        if self._conn is not None:
            await self._conn.close()
        s = self._settings
        self._stream.hold()
        self._conn = await ESLConnection.open(s.host, s.port, s.connect_timeout, self._stream.put)

    async def login(self) -> None:
        """Authenticate and subscribe; then the handler gets ``SwitchConnected`` and events.

        ESLAuthenticationError when the password is refused, ESLCommandError when the
        subscription is, ESLConnectionLost when the connection ends first.
        """
        s = self._settings
        frame = await self._request(f"auth {s.password}", what="auth")
        reply = frame.reply_text
        if not reply.startswith("+OK"):
            if self._conn is not None:
                await self._conn.close()
            raise ESLAuthenticationError(f"ESL auth at {s.host}:{s.port} refused: {reply}")
        await self.subscribe()
        log.info("esl.logged_in", switch_id=self._switch_id, host=s.host, port=s.port)
        self._require_conn("login")
        self._stream.announce(SwitchConnected(switch_id=self._switch_id))

    async def subscribe(self) -> None:
        """Send the ``event`` subscription; ESLCommandError unless it is answered ``+OK``."""
        command = self._settings.subscription()
        frame = await self._request(command, what="event")
        if not frame.reply_text.startswith("+OK"):
            raise ESLCommandError(f"subscription refused: {frame.reply_text}", frame.reply_text)

    # -- commands --------------------------------------------------------------------

    async def command(self, text: str) -> ESLFrame:
        """Send one raw command and return its reply frame, unchecked."""
        return await self._request(text, what=_what(text))

    async def api(self, command: str) -> str:
        """``api <command>``: the response body; ESLCommandError when it is ``-ERR ...``."""
        _check_line("command", command)
        frame = await self._request(f"api {command}", what=f"api {_what(command)}")
        text = _answer_text(frame)
        if text.startswith(_ERROR_PREFIXES):
            raise ESLCommandError(f"api {command[:_EXCERPT]}: {text.strip()}", text)
        return text

    async def bgapi(self, command: str, timeout: float = 60.0) -> str:  # noqa: ASYNC109
        """``bgapi <command>``: the body of its BACKGROUND_JOB (``+OK ...``).

        ESLCommandError when the command or the job answers ``-ERR ...``, or the job does
        not end within ``timeout`` seconds; ESLConnectionLost when the connection ends first.
        """
        _check_line("command", command)
        what = f"bgapi {_what(command)}"
        frame = await self._request(f"bgapi {command}", what=what, job=True)
        reply = frame.reply_text
        job = job_uuid_of(frame)
        if reply.startswith(_ERROR_PREFIXES) or not job:
            raise ESLCommandError(f"{what}: {reply or 'no Job-UUID in reply'}", reply)
        conn = self._require_conn(what)
        try:
            async with asyncio.timeout(timeout):
                event = await conn.job_result(job)
        except TimeoutError as exc:
            raise ESLCommandError(f"{what}: job {job} did not end in {timeout}s") from exc
        if event.body.startswith(_ERROR_PREFIXES):
            raise ESLCommandError(f"{what}: {event.body.strip()}", event.body)
        return event.body

    async def uuid_kill(self, uuid: str, cause: str = "NORMAL_CLEARING") -> str:
        """Hang a channel up with a hangup cause name (to cut a call)."""
        _check_word("uuid", uuid)
        _check_word("cause", cause)
        return await self.api(f"uuid_kill {uuid} {cause}")

    async def uuid_transfer(
        self, uuid: str, dest: str, dialplan: str = "XML", context: str = "default"
    ) -> str:
        """Send a (parked) channel to ``dest`` in ``dialplan``/``context``."""
        for name, value in (("uuid", uuid), ("dest", dest), ("dialplan", dialplan)):
            _check_word(name, value)
        _check_word("context", context)
        return await self.api(f"uuid_transfer {uuid} {dest} {dialplan} {context}")

    async def sched_hangup(
        self, uuid: str, seconds: int, cause: str = "ALLOTTED_TIMEOUT"
    ) -> str:
        """Have the switch hang the channel up ``seconds`` from now (``sched_hangup +N``)."""
        _check_word("uuid", uuid)
        _check_word("cause", cause)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ValueError(f"seconds must be a whole number >= 0: {seconds!r}")
        return await self.api(f"sched_hangup +{seconds} {uuid} {cause}")

    async def uuid_getvar(self, uuid: str, name: str) -> str | None:
        """A channel variable's value, None when it is not set (``_undef_``)."""
        _check_word("uuid", uuid)
        _check_word("name", name)
        body = await self.api(f"uuid_getvar {uuid} {name}")
        value = body[:-1] if body.endswith("\n") else body
        return None if value == "_undef_" else value

    async def show_channels(self) -> list[dict[str, str]]:
        """The switch's live channels (``show channels as json``), one dict per channel."""
        text = (await self.api("show channels as json")).strip()
        if not text or text.endswith("0 total."):
            return []
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ESLProtocolError(f"show channels: not JSON: {text[:_EXCERPT]!r}") from exc
        rows = data.get("rows", []) if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ESLProtocolError(f"show channels: unexpected JSON: {text[:_EXCERPT]!r}")
        return [
            {str(key): "" if value is None else str(value) for key, value in row.items()}
            for row in rows
        ]

    # -- the reconnecting loop -------------------------------------------------------

    async def run(self) -> None:
        """Connect, log in, keep alive and reconnect with backoff until ``close()``."""
        self._stream.start()
        s = self._settings
        backoff = Backoff(s.backoff_min, s.backoff_max, self._rng)
        while not self._closing.is_set():
            failure: ESLError | None = None
            reason = ""
            try:
                await self.connect()
                await self.login()
            except ESLError as exc:
                failure = exc
            else:
                backoff.reset()
                reason = await self._serve_connection()
            if self._closing.is_set():
                if failure is None:
                    log.info("esl.disconnected", switch_id=self._switch_id, reason=reason)
                break
            delay = backoff.next_delay()
            retry_in = round(delay, 3)
            if isinstance(failure, ESLAuthenticationError):
                log.error(
                    "esl.login_refused",
                    switch_id=self._switch_id,
                    error=str(failure),
                    retry_in=retry_in,
                )
            elif failure is not None:
                log.warning(
                    "esl.connect_failed",
                    switch_id=self._switch_id,
                    error=str(failure),
                    retry_in=retry_in,
                )
            else:
                log.info(
                    "esl.disconnected", switch_id=self._switch_id, reason=reason, retry_in=retry_in
                )
            await sleep_unless(self._closing, delay)

    async def close(self) -> None:
        """Stop reconnecting, close the connection, deliver what is queued, then stop."""
        self._closing.set()
        await self._stop_keepalive()
        if self._conn is not None:
            await self._conn.close()
        await self._stream.close()

    async def _serve_connection(self) -> str:
        conn = self._conn
        assert conn is not None
        self._keepalive = asyncio.create_task(self._keepalive_loop(conn), name="esl-keepalive")
        try:
            await serve_until(conn.lost, self._closing)
        finally:
            await self._stop_keepalive()
        if not conn.lost.done():
            await conn.close()
        reason = conn.lost.result()
        self._stream.put(SwitchDisconnected(switch_id=self._switch_id, reason=reason))
        return reason

    async def _keepalive_loop(self, conn: ESLConnection) -> None:
        s = self._settings
        while conn.is_open:
            await asyncio.sleep(s.keepalive_interval)
            try:
                async with asyncio.timeout(s.keepalive_timeout):
                    await conn.request("api status")
            except TimeoutError:
                log.warning(
                    "esl.keepalive_timeout", switch_id=self._switch_id, timeout=s.keepalive_timeout
                )
                conn.abort("keepalive timeout")
                return
            except ESLConnectionLost:
                return

    async def _stop_keepalive(self) -> None:
        await cancel_task(self._keepalive)
        self._keepalive = None

    # -- internals -------------------------------------------------------------------

    def inject(self, payload: object) -> None:
        """Deliver ``Marker(payload)`` after every event received so far.

        Called right after awaiting a command (``rows = await show_channels();
        inject(rows)``), the marker sits exactly where the reply was in the stream.
        """
        self._stream.inject(payload)

    def _handler_failed(self, item: ClientItem) -> None:
        log.exception("esl.handler_failed", switch_id=self._switch_id, esl_event=_item_name(item))

    def _require_conn(self, what: str) -> ESLConnection:
        if self._conn is None or not self._conn.is_open:
            raise ESLConnectionLost(f"{what}: not connected")
        return self._conn

    async def _request(self, command: str, *, what: str, job: bool = False) -> ESLFrame:
        conn = self._require_conn(what)
        timeout = self._settings.command_timeout
        try:
            async with asyncio.timeout(timeout):
                return await conn.request(command, job=job)
        except TimeoutError as exc:
            raise ESLCommandError(f"{what}: no answer in {timeout}s") from exc


def _answer_text(frame: ESLFrame) -> str:
    if frame.content_type == "api/response":
        return frame.body.decode("utf-8", "replace")
    if frame.content_type == "command/reply":
        return frame.reply_text
    raise ESLProtocolError(f"unexpected answer type {frame.content_type!r}")


def _what(command: str) -> str:
    """A command's first word, for messages."""
    return command.split(None, 1)[0] if command.strip() else "command"


def _item_name(item: ClientItem) -> str:
    if isinstance(item, ESLEvent):
        return f"{item.name} {item.subclass}" if item.subclass else item.name
    return type(item).__name__


def _check_line(name: str, value: str) -> None:
    if not value.strip() or "\n" in value or "\r" in value:
        raise ValueError(f"{name} must be one non-empty line: {value[:_EXCERPT]!r}")


def _check_word(name: str, value: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{name} must be one word without spaces or line breaks: {value!r}")
