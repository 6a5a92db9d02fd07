"""Switch connectors as the daemon sees them: events in, hangups out.

``AsteriskConnector`` owns one AMI client and one translator: AMI messages go through the
translator, in stream order, and the resulting switch-neutral events go to the session
manager's handler. A timer finalises calls whose CDRs never came (grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from connectors.ami.client import AMIClient, AMISettings, ClientItem
from connectors.ami.errors import AMIError
from connectors.ami.translator import AMITranslator
from connectors.events import Event, SwitchConnected, SwitchDisconnected
from daemon.settings import SwitchSettings

log = structlog.get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]


class SwitchConnector(Protocol):
    """What the composition root needs of any switch connector."""

    connected: bool

    def start(self) -> None:
        """Start connecting (in the background, reconnecting forever)."""
        ...

    async def close(self) -> None:
        """Stop and disconnect."""
        ...

    async def hangup(self, channel: str, cause: int = 16) -> None:
        """Cut one channel."""
        ...


class AsteriskConnector:
    """AMI client + translator for one Asterisk, delivering events in order."""

    def __init__(
        self, settings: SwitchSettings, handler: EventHandler, *, expire_every: float = 0.5
    ) -> None:
        self.switch_id = settings.id
        self.connected = False
        self._handler = handler
        self._translator = AMITranslator(settings.id)
        self._client = AMIClient(
            AMISettings(
                host=settings.host,
                port=settings.port,
                username=settings.username or "",
                secret=settings.secret.get_secret_value(),
                ping_interval=settings.ping_interval,
                ping_timeout=settings.ping_timeout,
                backoff_min=settings.reconnect_min,
                backoff_max=settings.reconnect_max,
            ),
            self._on_item,
            switch_id=settings.id,
        )
        self._expire_every = expire_every
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Run the client and the grace-period timer."""
        self._tasks = [
            asyncio.create_task(self._client.run(), name=f"ami:{self.switch_id}"),
            asyncio.create_task(self._expire_loop(), name=f"ami-expire:{self.switch_id}"),
        ]

    async def close(self) -> None:
        """Stop the client, then the timer."""
        await self._client.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def hangup(self, channel: str, cause: int = 16) -> None:
        """Cut a call with an AMI Hangup action."""
        try:
            await self._client.hangup(channel, cause)
        except AMIError as exc:
            log.error("hangup failed", switch_id=self.switch_id, channel=channel, error=str(exc))

    async def _on_item(self, item: ClientItem) -> None:
        if isinstance(item, SwitchConnected):
            self.connected = True
            await self._handler(item)
            return
        if isinstance(item, SwitchDisconnected):
            self.connected = False
            await self._handler(item)
            return
        async with self._lock:
            for event in self._translator.feed(item):
                await self._handler(event)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._expire_every)
            async with self._lock:
                for event in self._translator.expire(time.time()):
                    await self._handler(event)


def build_connector(settings: SwitchSettings, handler: EventHandler) -> SwitchConnector:
    """The connector for one configured switch."""
    if settings.kind == "asterisk":
        return AsteriskConnector(settings, handler)
    raise NotImplementedError(
        f"switch {settings.id!r}: kind {settings.kind!r} is not supported yet"
    )
