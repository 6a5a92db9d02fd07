"""Reconnecting Asterisk AMI client: login, actions matched by ActionID, keepalive.

``run()`` connects, logs in, pings every ``ping_interval`` (no answer within
``ping_timeout`` drops the connection), and reconnects with jittered exponential backoff
until ``close()``. Actions pending on a lost connection fail with
:class:`AMIConnectionLost`; they are never replayed. Events and the connector state
(``SwitchConnected`` / ``SwitchDisconnected``) reach one async handler, in stream order,
from one dispatcher task; a handler that raises is logged and the stream goes on.
Errors (``errors.py``): AMIError -> AMIAuthenticationError, AMIConnectionLost,
AMIProtocolError, AMIActionError.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from connectors.ami.connection import AMIConnection
from connectors.ami.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionLost,
    AMIError,
)
from connectors.ami.parser import AMIMessage
from connectors.events import Marker, SwitchConnected, SwitchDisconnected
from connectors.reconnect import Backoff, EventStream, cancel_task, serve_until, sleep_unless

log = structlog.get_logger(__name__)

ClientItem = AMIMessage | SwitchConnected | SwitchDisconnected | Marker
Handler = Callable[[ClientItem], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AMISettings:
    """Where and how to connect; times in seconds."""

    host: str
    port: int
    username: str
    secret: str
    events: str = "on"
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 5.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0


class AMIClient:
    """An AMI session to one switch, reconnecting forever under ``run()``."""

    def __init__(
        self,
        settings: AMISettings,
        handler: Handler,
        *,
        switch_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._switch_id = switch_id
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        self._conn: AMIConnection | None = None
        self._stream: EventStream[AMIMessage | SwitchConnected | SwitchDisconnected] = (
            EventStream(handler, self._handler_failed, "ami-dispatch")
        )
        self._pinger: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    # -- one connection --------------------------------------------------------------

    async def connect(self) -> None:
        """Open the TCP connection and check the banner (raises AMIConnectionLost)."""
        self._stream.start()
        if self._conn is not None:
            await self._conn.close()
        s = self._settings
        self._stream.hold()
        self._conn = await AMIConnection.open(s.host, s.port, s.connect_timeout, self._stream.put)

    async def login(self) -> None:
        """Log in; AMIAuthenticationError on bad credentials, AMIConnectionLost on close."""
        s = self._settings
        fields: dict[str, object] = {"Username": s.username, "Secret": s.secret}
        fields["Events"] = s.events
        response = await self._request("Login", fields, check=False)
        if response.get("Response") != "Success":
            message = response.get("Message", "")
            if self._conn is not None:
                await self._conn.close()
            raise AMIAuthenticationError(f"AMI login as {s.username!r} refused: {message}")
        log.info("ami.logged_in", switch_id=self._switch_id, host=s.host, port=s.port)

    # -- actions ---------------------------------------------------------------------

    async def send_action(self, name: str, **fields: object) -> AMIMessage:
        """Send one action and return its response (AMIActionError on Response: Error)."""
        return await self._request(name, fields, check=True)

    async def send_list_action(self, name: str, **fields: object) -> list[AMIMessage]:
        """Send a list action (EventList) and return its items, without the Complete event."""
        conn = self._require_conn(name)
        try:
            async with asyncio.timeout(self._settings.action_timeout):
                response, items = await conn.request(
                    name, self._next_id(), dict(fields), is_list=True
                )
        except TimeoutError as exc:
            raise AMIActionError(f"action {name}: no answer in time") from exc
        _check(name, response)
        return items

    async def core_show_channels(self) -> list[AMIMessage]:
        """The CoreShowChannel items of the switch's live channels."""
        return await self.send_list_action("CoreShowChannels")

    async def hangup(self, channel: str, cause: int = 16) -> AMIMessage:
        """Hang a channel up (the A leg, to cut a call) with a Q.850 cause."""
        return await self.send_action("Hangup", Channel=channel, Cause=cause)

    async def ping(self) -> AMIMessage:
        """One Ping round trip."""
        return await self.send_action("Ping")

    # -- the reconnecting loop -------------------------------------------------------

    async def run(self) -> None:
        """Connect, log in, keep alive and reconnect with backoff until ``close()``."""
        self._stream.start()
        s = self._settings
        backoff = Backoff(s.backoff_min, s.backoff_max, self._rng)
        while not self._closing.is_set():
            try:
                await self.connect()
                await self.login()
            except AMIAuthenticationError as exc:
                log.error("ami.login_refused", switch_id=self._switch_id, error=str(exc))
            except AMIError as exc:
                log.warning("ami.connect_failed", switch_id=self._switch_id, error=str(exc))
            else:
                backoff.reset()
                await self._serve_connection()
            if self._closing.is_set():
                break
            await sleep_unless(self._closing, backoff.next_delay())

    async def close(self) -> None:
        """Stop reconnecting, close the connection, deliver what is queued, then stop."""
        self._closing.set()
        await self._stop_pinger()
        if self._conn is not None:
            await self._conn.close()
        await self._stream.close()

    async def _serve_connection(self) -> None:
        conn = self._conn
        assert conn is not None
        self._stream.announce(SwitchConnected(switch_id=self._switch_id))
        self._pinger = asyncio.create_task(self._ping_loop(conn), name="ami-ping")
        try:
            await serve_until(conn.lost, self._closing)
        finally:
            await self._stop_pinger()
        if not conn.lost.done():
            await conn.close()
        reason = conn.lost.result()
        log.info("ami.disconnected", switch_id=self._switch_id, reason=reason)
        self._stream.put(SwitchDisconnected(switch_id=self._switch_id, reason=reason))

    async def _ping_loop(self, conn: AMIConnection) -> None:
        s = self._settings
        while conn.is_open:
            await asyncio.sleep(s.ping_interval)
            try:
                async with asyncio.timeout(s.ping_timeout):
                    await conn.request("Ping", self._next_id(), {})
            except TimeoutError:
                log.warning("ami.ping_timeout", switch_id=self._switch_id, timeout=s.ping_timeout)
                conn.abort("ping timeout")
                return
            except AMIConnectionLost:
                return

    async def _stop_pinger(self) -> None:
        await cancel_task(self._pinger)
        self._pinger = None

    # -- internals -------------------------------------------------------------------

    def inject(self, payload: object) -> None:
        """Deliver ``Marker(payload)`` to the handler after every event received so far."""
        self._stream.inject(payload)

    def _handler_failed(self, item: ClientItem) -> None:
        name = item.get("Event", "") if isinstance(item, AMIMessage) else type(item).__name__
        log.exception("ami.handler_failed", switch_id=self._switch_id, ami_event=name)

    def _require_conn(self, name: str) -> AMIConnection:
        if self._conn is None or not self._conn.is_open:
            raise AMIConnectionLost(f"action {name}: not connected")
        return self._conn

    def _next_id(self) -> str:
        return f"rk-{self._id_prefix}-{next(self._ids)}"

    async def _request(self, name: str, fields: dict[str, object], *, check: bool) -> AMIMessage:
        conn = self._require_conn(name)
        try:
            async with asyncio.timeout(self._settings.action_timeout):
                response, _ = await conn.request(name, self._next_id(), fields)
        except TimeoutError as exc:
            raise AMIActionError(f"action {name}: no answer in time") from exc
        if check:
            _check(name, response)
        return response


def _check(name: str, response: AMIMessage) -> None:
    if response.get("Response") == "Error":
        message = response.get("Message", "")
        raise AMIActionError(f"action {name} failed: {message}", dict(response))
