"""The FreeSWITCH connector: one ESL client and one ESL translator for one switch.

ESL events go through the translator in stream order; the resulting switch-neutral
events go to the session manager's handler. A CHANNEL_PARK in one of the switch's
``park_contexts`` is an authorization hold: it is handed to the park authorizer
(``daemon/esl_park.py``) in a task of its own, so that the event stream never waits for
Redis. On every (re)connection ``show channels as json`` is listed and reconciled at its
place in the stream. Calls are cut with ``uuid_kill <uuid> <cause>``, the reason code
first recorded in the channel variable ``rk_cut_reason`` (it lands in the switch's CDR).
Agent seats come from ``callcenter::info`` events (``ESLSeatTranslator``); on every
connection ``callcenter_config agent list`` is read and reconciled; a seat is logged off
with ``callcenter_config agent set status <agent> 'Logged Out'``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

import structlog

from connectors.esl.client import ESLClient, ESLSettings
from connectors.esl.errors import ESLError
from connectors.esl.listing import live_calls_from_rows
from connectors.esl.parser import ESLEvent
from connectors.esl.seats import ESLSeatTranslator
from connectors.esl.translator import ESLTranslator
from connectors.events import CallAnswered, CallStarted, Event
from connectors.live_calls import LiveCall
from connectors.seat_tenants import SeatTenantRules
from daemon.authorization import Authorizer, Reason
from daemon.connector_base import ConnectorBase
from daemon.connector_types import EventHandler, Resyncer, wall_clock
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


class FreeSwitchConnector(ConnectorBase):
    """ESL client + translator (+ park authorization) for one FreeSWITCH."""

    protocol = "esl"

    def __init__(
        self,
        settings: SwitchSettings,
        handler: EventHandler,
        *,
        resync: Resyncer | None = None,
        authorizer: Authorizer | None = None,
        expire_every: float = 0.5,
        seat_rules: SeatTenantRules | None = None,
    ) -> None:
        super().__init__(settings.id, handler, resync=resync, expire_every=expire_every)
        self._translator = ESLTranslator(settings.id)
        self._seats = ESLSeatTranslator(settings.id, seat_rules or SeatTenantRules())
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
        self._side_tasks: set[asyncio.Task[object]] = set()

    @property
    def client(self) -> ESLClient:
        """The ESL client (for ``api`` commands)."""
        return self._client

    async def close(self) -> None:
        """Stop the client, the timer, then the park authorizations in flight."""
        await super().close()
        side = list(self._side_tasks)
        for task in side:
            task.cancel()
        for task in side:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
                    at=wall_clock(),
                )
            )
        return events

    # -- the protocol ----------------------------------------------------------------

    async def _run_client(self) -> None:
        await self._client.run()

    async def _close_client(self) -> None:
        await self._client.close()

    async def _list_live(self) -> Sequence[Mapping[str, str]]:
        return await self._client.show_channels()

    def _inject(self, payload: object) -> None:
        self._client.inject(payload)

    def _live_calls(self, items: Sequence[Mapping[str, str]]) -> list[LiveCall]:
        return live_calls_from_rows(items, wall_clock())

    def _before_translate(self, item: object) -> None:
        if self._park is not None and isinstance(item, ESLEvent) and self._park.wants(item):
            park = self._park
            task: asyncio.Task[object] = asyncio.create_task(
                park.handle(item), name=f"esl-park:{item.unique_id}"
            )
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    def _translate(self, item: object) -> list[Event]:
        return self._translator.feed(item) if isinstance(item, ESLEvent) else []

    def _expire(self, now: float) -> list[Event]:
        return self._translator.expire(now)

    async def logoff_seat(self, seat: str) -> None:
        """Log a callcenter agent out (``callcenter_config agent set status``)."""
        try:
            reply = await self._client.api(self._seats.logoff_command(seat))
        except (ESLError, ValueError) as exc:
            log.warning("seat logoff failed", switch_id=self.switch_id, seat=seat, error=str(exc))
            return
        if reply.startswith("-ERR"):
            log.warning("seat logoff refused", switch_id=self.switch_id, seat=seat, reply=reply)

    def present_seats(self) -> dict[str, str]:
        """The seats present on this switch: seat -> tenant."""
        return self._seats.present()

    def _translate_seats(self, item: object) -> list[Event]:
        return self._seats.feed(item) if isinstance(item, ESLEvent) else []

    async def _list_seats(self) -> object | None:
        text = await self._client.api("callcenter_config agent list")
        if text.startswith("-ERR") or "|" not in text:  # mod_callcenter not loaded
            return None
        return text

    def _adopt_seats(self, items: object) -> list[Event]:
        assert isinstance(items, str)
        try:
            return self._seats.adopt_listing(items, wall_clock())
        except ValueError as exc:
            log.warning("seat listing not understood", switch_id=self.switch_id, error=str(exc))
            return []
