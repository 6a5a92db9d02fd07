"""The FreeSWITCH connector: one ESL client and one ESL translator for one switch.

ESL events go through the translator in stream order; the resulting switch-neutral
events go to the session manager's handler. A CHANNEL_PARK in one of the switch's
``park_contexts`` is an authorization hold: it is handed to the park authorizer
(``daemon/esl_park.py``) in a task of its own, so that the event stream never waits for
Redis. On every (re)connection ``show channels as json`` is listed and reconciled at its
place in the stream. Calls are cut with ``uuid_kill <uuid> <cause>``, the reason code
first recorded in the channel variable ``rk_cut_reason`` (it lands in the switch's CDR).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

import structlog

from connectors.esl.client import ClientItem, ESLClient, ESLSettings, Marker
from connectors.esl.errors import ESLError
from connectors.esl.listing import live_calls_from_rows
from connectors.esl.parser import ESLEvent
from connectors.esl.translator import ESLTranslator
from connectors.events import CallAnswered, CallStarted, Event, SwitchConnected, SwitchDisconnected
from connectors.live_calls import LiveCall
from daemon.authorization import Authorizer, Reason
from daemon.connector_types import EventHandler, Resyncer, ResyncListing, wall_clock
from daemon.esl_park import ParkAuthorizer
from daemon.freeswitch_dialplan import hangup_cause
from daemon.settings import SwitchSettings

log = structlog.get_logger(__name__)

# A call cut for credit ends like one the switch-side limit ended: its allotted time is up.
_CUT_CAUSES = {"INSUFFICIENT_CREDIT": "ALLOTTED_TIMEOUT", "UNTRACKED_CALL": "CALL_REJECTED"}


def cut_cause(reason: str) -> str:
    """The FreeSWITCH hangup cause for cutting a call with the daemon's ``reason``."""
    if reason in _CUT_CAUSES:
        return _CUT_CAUSES[reason]
    try:
        return hangup_cause(Reason(reason))
    except ValueError:
        return "NORMAL_CLEARING"


class FreeSwitchConnector:
    """ESL client + translator (+ park authorization) for one FreeSWITCH."""

    def __init__(
        self,
        settings: SwitchSettings,
        handler: EventHandler,
        *,
        resync: Resyncer | None = None,
        authorizer: Authorizer | None = None,
        expire_every: float = 0.5,
    ) -> None:
        self.switch_id = settings.id
        self.connected = False
        self._handler = handler
        self._resync = resync
        self._lost_at: Decimal | None = None
        self._translator = ESLTranslator(settings.id)
        self._client = ESLClient(
            ESLSettings(
                host=settings.host,
                port=settings.port,
                password=settings.secret.get_secret_value(),
                event_format=settings.event_format,
                keepalive_interval=settings.ping_interval,
                keepalive_timeout=settings.ping_timeout,
                backoff_min=settings.reconnect_min,
                backoff_max=settings.reconnect_max,
            ),
            self._on_item,
            settings.id,
        )
        self._park: ParkAuthorizer | None = None
        if authorizer is not None and settings.park_contexts:
            self._park = ParkAuthorizer(
                settings.id,
                authorizer,
                self._client,
                contexts=settings.park_contexts,
                continue_context=settings.park_continue_context,
            )
        self._expire_every = expire_every
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[object]] = set()
        self._lock = asyncio.Lock()

    @property
    def client(self) -> ESLClient:
        """The ESL client (for ``api`` commands)."""
        return self._client

    def start(self) -> None:
        """Run the client and the grace-period timer."""
        self._tasks = [
            asyncio.create_task(self._client.run(), name=f"esl:{self.switch_id}"),
            asyncio.create_task(self._expire_loop(), name=f"esl-expire:{self.switch_id}"),
        ]

    async def close(self) -> None:
        """Stop the client, the park authorizations in flight, then the timer."""
        await self._client.close()
        for task in [*self._tasks, *self._side_tasks]:
            task.cancel()
        for task in [*self._tasks, *self._side_tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._side_tasks.clear()

    async def hangup(self, channel: str, cause: int = 16, reason: str = "") -> None:
        """Cut a call: ``uuid_kill <uuid> <cause>``, the reason noted on the channel."""
        try:
            if reason:
                with contextlib.suppress(ESLError):
                    await self._client.api(f"uuid_setvar {channel} rk_cut_reason {reason}")
            await self._client.uuid_kill(channel, cut_cause(reason))
        except (ESLError, ValueError) as exc:
            log.error("hangup failed", switch_id=self.switch_id, channel=channel, error=str(exc))

    # -- resync target ---------------------------------------------------------------

    def tracked_calls(self) -> list[str]:
        """Billing-leg uuids the translator follows."""
        return self._translator.tracked_calls()

    def forget(self, call_id: str) -> None:
        """Stop following a call the switch no longer has."""
        self._translator.drop(call_id)

    def adopt(self, call: LiveCall) -> list[Event]:
        """Announce a live call found in the listing.

        The translator needs no state for it: its next event (at the latest its
        CHANNEL_HANGUP_COMPLETE, which carries every billing fact) starts it.
        """
        now = wall_clock()
        events: list[Event] = [
            CallStarted(
                switch_id=self.switch_id,
                call_id=call.call_id,
                leg_id=call.leg_id,
                channel=call.channel,
                account=call.account,
                caller=call.caller,
                callee=call.callee,
                at=call.started_at,
            )
        ]
        if call.answered:
            events.append(
                CallAnswered(
                    switch_id=self.switch_id,
                    call_id=call.call_id,
                    leg_id=call.leg_id,
                    channel=call.channel,
                    account=call.account,
                    at=now,
                )
            )
        return events

    async def _request_listing(self) -> None:
        candidates = set(self._translator.tracked_calls())
        try:
            rows = await self._client.show_channels()
        except ESLError as exc:
            log.error("resync: cannot list channels", switch_id=self.switch_id, error=str(exc))
            return
        self._client.inject(ResyncListing(rows, candidates))

    async def _apply_listing(self, listing: ResyncListing) -> None:
        if self._resync is None:
            return
        calls = live_calls_from_rows(listing.items, wall_clock())
        lost_at = self._lost_at or wall_clock()
        async with self._lock:
            await self._resync(self.switch_id, calls, self, lost_at, listing.candidates)

    # -- the event stream ------------------------------------------------------------

    async def _on_item(self, item: ClientItem) -> None:
        if isinstance(item, SwitchConnected):
            self.connected = True
            await self._handler(item)
            if self._resync is not None:
                task = asyncio.create_task(self._request_listing(), name="esl-resync")
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
        if self._park is not None and self._park.wants(item):
            self._spawn_park(item)
        async with self._lock:
            for event in self._translator.feed(item):
                await self._handler(event)

    def _spawn_park(self, event: ESLEvent) -> None:
        assert self._park is not None
        task: asyncio.Task[object] = asyncio.create_task(
            self._park.handle(event), name=f"esl-park:{event.unique_id}"
        )
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._expire_every)
            async with self._lock:
                for event in self._translator.expire(time.time()):
                    await self._handler(event)
