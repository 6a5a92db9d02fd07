"""The Asterisk connector: one AMI client and one AMI translator for one switch.

AMI messages go through the translator in stream order; the resulting switch-neutral
events go to the session manager's handler (``daemon/connector_base.py``). A timer
finalises calls whose CDRs never came (grace period). On every (re)connection
``CoreShowChannels`` is listed and reconciled at its place in the stream. Calls are cut
with an AMI ``Hangup``. Agent seats come from the same messages (``AMISeatTranslator``);
on every connection ``QueueStatus`` and ``Agents`` are listed and reconciled; a seat is
logged off with ``AgentLogoff`` and a ``QueueRemove`` per queue membership.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from connectors.ami.client import AMIClient, AMISettings
from connectors.ami.errors import AMIError
from connectors.ami.listing import live_calls_from_listing
from connectors.ami.parser import AMIMessage
from connectors.ami.seats import AMISeatTranslator
from connectors.ami.translator import AMITranslator
from connectors.events import Event
from connectors.live_calls import LiveCall
from connectors.seat_tenants import SeatTenantRules
from daemon.connector_base import ConnectorBase
from daemon.connector_types import EventHandler, Resyncer, wall_clock
from daemon.settings import SwitchSettings

log = structlog.get_logger(__name__)


class AsteriskConnector(ConnectorBase):
    """AMI client + translator for one Asterisk, delivering events in order."""

    protocol = "ami"

    def __init__(
        self,
        settings: SwitchSettings,
        handler: EventHandler,
        *,
        resync: Resyncer | None = None,
        expire_every: float = 0.5,
        seat_rules: SeatTenantRules | None = None,
    ) -> None:
        super().__init__(settings.id, handler, resync=resync, expire_every=expire_every)
        self._listing: dict[str, list[AMIMessage]] = {}  # the last listing, by Linkedid
        self._translator = AMITranslator(settings.id)
        self._seats = AMISeatTranslator(settings.id, seat_rules or SeatTenantRules())
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

    async def hangup(self, channel: str, cause: int = 16, reason: str = "") -> None:
        """Cut a call with an AMI Hangup action."""
        try:
            await self._client.hangup(channel, cause)
        except AMIError as exc:
            log.error("hangup failed", switch_id=self.switch_id, channel=channel, error=str(exc))

    async def logoff_seat(self, seat: str) -> None:
        """Log a seat off: AgentLogoff for an agent, QueueRemove for each membership."""
        for action in self._seats.logoff_actions(seat):
            fields = dict(action)
            name = fields.pop("Action")
            try:
                await self._client.send_action(name, **fields)
            except AMIError as exc:  # the dialplan may have removed it already
                log.warning(
                    "seat logoff action failed",
                    switch_id=self.switch_id,
                    seat=seat,
                    action=name,
                    error=str(exc),
                )

    def present_seats(self) -> dict[str, str]:
        """The seats present on this switch: seat -> tenant."""
        return self._seats.present()

    # -- resync target ---------------------------------------------------------------

    def tracked_calls(self) -> list[str]:
        """Linkedids the translator follows."""
        return self._translator.tracked_calls()

    def forget(self, call_id: str) -> None:
        """Stop following a call the switch no longer has."""
        self._translator.forget(call_id)

    def adopt(self, call: LiveCall) -> list[Event]:
        """Follow a live call found in the listing (its channels from that listing)."""
        return self._translator.adopt(call, self._listing.get(call.call_id, []), wall_clock())

    # -- the protocol ----------------------------------------------------------------

    async def _run_client(self) -> None:
        await self._client.run()

    async def _close_client(self) -> None:
        await self._client.close()

    async def _list_live(self) -> Sequence[Mapping[str, str]]:
        return await self._client.core_show_channels()

    def _inject(self, payload: object) -> None:
        self._client.inject(payload)

    def _live_calls(self, items: Sequence[Mapping[str, str]]) -> list[LiveCall]:
        self._listing = {}
        for item in items:
            uid = item.get("Uniqueid", "")
            if uid and isinstance(item, AMIMessage):
                self._listing.setdefault(item.get("Linkedid") or uid, []).append(item)
        return live_calls_from_listing(items, wall_clock())

    def _translate(self, item: object) -> list[Event]:
        return self._translator.feed(item) if isinstance(item, AMIMessage) else []

    def _expire(self, now: float) -> list[Event]:
        return self._translator.expire(now)

    def _translate_seats(self, item: object) -> list[Event]:
        return self._seats.feed(item) if isinstance(item, AMIMessage) else []

    async def _list_seats(self) -> object | None:
        # every queue (a listing of one queue would log off the seats of the others)
        queues = await self._client.send_list_action("QueueStatus")
        try:
            agents = await self._client.send_list_action("Agents")
        except AMIError:  # app_agent_pool not loaded: no agents to list
            agents = []
        return [*queues, *agents]

    def _adopt_seats(self, items: object) -> list[Event]:
        assert isinstance(items, list)
        return self._seats.adopt_listing(items, wall_clock())
