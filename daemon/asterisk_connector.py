"""The Asterisk connector: one AMI client and one AMI translator for one switch.

AMI messages go through the translator in stream order; the resulting switch-neutral
events go to the session manager's handler. A timer finalises calls whose CDRs never
came (grace period). On every (re)connection ``CoreShowChannels`` is listed and
reconciled at its place in the stream. Calls are cut with an AMI ``Hangup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

import structlog

from connectors.ami.client import AMIClient, AMISettings, ClientItem, Marker
from connectors.ami.errors import AMIError
from connectors.ami.listing import live_calls_from_listing
from connectors.ami.parser import AMIMessage
from connectors.ami.translator import AMITranslator
from connectors.events import Event, SwitchConnected, SwitchDisconnected
from connectors.live_calls import LiveCall
from daemon.connector_types import EventHandler, Resyncer, ResyncListing, wall_clock
from daemon.settings import SwitchSettings

log = structlog.get_logger(__name__)


class AsteriskConnector:
    """AMI client + translator for one Asterisk, delivering events in order."""

    def __init__(
        self,
        settings: SwitchSettings,
        handler: EventHandler,
        *,
        resync: Resyncer | None = None,
        expire_every: float = 0.5,
    ) -> None:
        self.switch_id = settings.id
        self.connected = False
        self._handler = handler
        self._resync = resync
        self._lost_at: Decimal | None = None
        self._listing: dict[str, list[AMIMessage]] = {}
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

    async def hangup(self, channel: str, cause: int = 16, reason: str = "") -> None:
        """Cut a call with an AMI Hangup action."""
        try:
            await self._client.hangup(channel, cause)
        except AMIError as exc:
            log.error("hangup failed", switch_id=self.switch_id, channel=channel, error=str(exc))

    # -- resync target ---------------------------------------------------------------

    def tracked_calls(self) -> list[str]:
        """Linkedids the translator follows."""
        return self._translator.tracked_calls()

    def forget(self, call_id: str) -> None:
        """Stop following a call the switch no longer has."""
        self._translator.forget(call_id)

    def adopt(self, call: LiveCall) -> list[Event]:
        """Follow a live call found in the listing."""
        return self._translator.adopt(call, self._listing.get(call.call_id, []), wall_clock())

    async def _request_listing(self) -> None:
        """List the live channels; the answer joins the event stream where it arrived."""
        candidates = set(self._translator.tracked_calls())
        try:
            items = await self._client.core_show_channels()
        except AMIError as exc:
            log.error("resync: cannot list channels", switch_id=self.switch_id, error=str(exc))
            return
        self._client.inject(ResyncListing(items, candidates))

    async def _apply_listing(self, listing: ResyncListing) -> None:
        if self._resync is None:
            return
        self._listing = {}
        for item in listing.items:
            uid = item.get("Uniqueid", "")
            if uid and isinstance(item, AMIMessage):
                self._listing.setdefault(item.get("Linkedid") or uid, []).append(item)
        calls = live_calls_from_listing(listing.items, wall_clock())
        lost_at = self._lost_at or wall_clock()
        try:
            async with self._lock:
                await self._resync(self.switch_id, calls, self, lost_at, listing.candidates)
        finally:
            self._listing = {}

    async def _on_item(self, item: ClientItem) -> None:
        if isinstance(item, SwitchConnected):
            self.connected = True
            await self._handler(item)
            if self._resync is not None:
                task = asyncio.create_task(self._request_listing(), name="ami-resync")
                self._tasks = [t for t in self._tasks if not t.done()] + [task]
            return
        if isinstance(item, SwitchDisconnected):
            self.connected = False
            self._lost_at = wall_clock()
            await self._handler(item)
            return
        if isinstance(item, Marker):
            if isinstance(item.payload, ResyncListing):
                await self._apply_listing(item.payload)
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
