"""What the Asterisk and FreeSWITCH connectors share: the event stream, resync, expiry.

A connector owns one protocol client and one translator for one switch. This base runs
the client and a grace-period timer, delivers SwitchConnected / SwitchDisconnected to the
handler, and on every connection asks for the switch's channel listing; the client
injects the answer into its event stream (``Marker``) where it arrived, and the base
reconciles it there (``daemon/resync.py``). Every other protocol item goes through the
translator, under one lock shared with the timer, so the events of a call stay in order.
A subclass supplies the protocol: ``_run_client``, ``_close_client``, ``_list_live`` +
``_inject`` + ``_live_calls`` (resync), ``_translate`` + ``_expire`` and the resync target
methods (``tracked_calls``, ``forget``, ``adopt``), and ``hangup``.

Agent seats follow the same stream: every item also goes through the seat translator
(``_translate_seats``), and on every connection the switch's seats are listed
(``_list_seats``) and reconciled where the answer arrived (``_adopt_seats``), so a seat
that logged in or out while the daemon was away is seen. ``logoff_seat`` logs a seat
off the switch (past its tenant's seat limit).

Progress (for the systemd watchdog, ``daemon/watchdog.py``): ``last_progress`` is the
monotonic time the connector's loop last got an item through: a switch event, a
``SwitchConnected`` / ``SwitchDisconnected``, or a probe. ``probe()`` puts a marker into
the client's stream; it comes back through the client's dispatcher task and this
connector's lock, so it proves the whole path alive even when the switch is quiet or
unreachable (a client that keeps reconnecting still dispatches, so it counts as
progress). A handler stuck on one item, a lock never released, or a client task that
died leaves the probe unanswered and ``last_progress`` stale. A connection that went
silent is the client's own keepalive's business: its timeout drops the connection,
and the reconnection shows in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

import structlog

from connectors.events import Event, SwitchConnected, SwitchDisconnected
from connectors.live_calls import LiveCall
from daemon.connector_types import (
    EventHandler,
    Resyncer,
    ResyncListing,
    SeatListing,
    wall_clock,
)

log = structlog.get_logger(__name__)


class ConnectorBase(ABC):
    """One switch's client + translator, delivering events in order (see module doc)."""

    protocol = "switch"  # names the tasks: "ami", "esl"

    def __init__(
        self,
        switch_id: str,
        handler: EventHandler,
        *,
        resync: Resyncer | None,
        expire_every: float,
    ) -> None:
        self.switch_id = switch_id
        self.connected = False
        self._handler = handler
        self._resync = resync
        self._lost_at: Decimal | None = None
        self._expire_every = expire_every
        self._tasks: list[asyncio.Task[None]] = []
        self._loops: list[asyncio.Task[None]] = []  # the client and the timer
        self._lock = asyncio.Lock()
        self.on_item: Callable[[], None] | None = None  # called for every protocol item
        self._up = asyncio.Event()
        self._probe_pending = False
        self.last_progress = time.monotonic()

    # -- the protocol, per switch kind -------------------------------------------------

    @abstractmethod
    async def _run_client(self) -> None:
        """Connect and reconnect forever, delivering items to ``_on_item``."""

    @abstractmethod
    async def _close_client(self) -> None:
        """Stop the client."""

    @abstractmethod
    async def _list_live(self) -> Sequence[Mapping[str, str]]:
        """The switch's live channels (raises the protocol's error on failure)."""

    @abstractmethod
    def _inject(self, payload: object) -> None:
        """Put ``payload`` in the client's event stream after what arrived so far."""

    @abstractmethod
    def _live_calls(self, items: Sequence[Mapping[str, str]]) -> list[LiveCall]:
        """The listing as switch-neutral live calls."""

    @abstractmethod
    def _translate(self, item: object) -> list[Event]:
        """The events of one protocol item."""

    @abstractmethod
    def _expire(self, now: float) -> list[Event]:
        """Calls whose end events never came, finalised after the grace period."""

    @abstractmethod
    def tracked_calls(self) -> list[str]:
        """Call ids the translator follows."""

    @abstractmethod
    def forget(self, call_id: str) -> None:
        """Stop following a call the switch no longer has."""

    @abstractmethod
    def adopt(self, call: LiveCall) -> list[Event]:
        """Follow (announce) a live call found in the listing."""

    @abstractmethod
    async def hangup(self, channel: str, cause: int = 16, reason: str = "") -> None:
        """Cut one channel."""

    @abstractmethod
    def _translate_seats(self, item: object) -> list[Event]:
        """The seat events (AgentLoggedIn / AgentLoggedOut) of one protocol item."""

    @abstractmethod
    async def _list_seats(self) -> object | None:
        """The switch's seat listing (None: the switch has no seats to list)."""

    @abstractmethod
    def _adopt_seats(self, items: object) -> list[Event]:
        """Reconcile the seats with a listing: the seats that came and went meanwhile."""

    @abstractmethod
    async def logoff_seat(self, seat: str) -> None:
        """Log one agent seat off the switch (errors are logged, not raised)."""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Run the client and the grace-period timer."""
        self.last_progress = time.monotonic()
        self._loops = [
            asyncio.create_task(self._run_client(), name=f"{self.protocol}:{self.switch_id}"),
            asyncio.create_task(
                self._expire_loop(), name=f"{self.protocol}-expire:{self.switch_id}"
            ),
        ]
        self._tasks = list(self._loops)

    async def close(self) -> None:
        """Stop the client, then the timer and any resync in flight."""
        await self._close_client()
        await _cancel(self._tasks)
        self._tasks = []
        self._loops = []

    async def wait_connected(self) -> None:
        """Return once the switch is connected (at once when it is)."""
        await self._up.wait()

    def probe(self) -> None:
        """Ask the loop to prove it is alive: ``last_progress`` moves when it does.

        Nothing is sent while a probe is still on its way, or when the client or the
        timer task has ended (then the connector makes no progress any more).
        """
        if self._probe_pending or not self._loops or any(t.done() for t in self._loops):
            return
        self._probe_pending = True
        self._inject(_Probe())

    # -- the event stream --------------------------------------------------------------

    async def _on_item(self, item: object) -> None:
        try:
            await self._deliver(item)
        finally:
            self.last_progress = time.monotonic()

    async def _deliver(self, item: object) -> None:
        payload = getattr(item, "payload", None)
        if isinstance(payload, _Probe):
            async with self._lock:  # a timer stuck under the lock holds the probe too
                self._probe_pending = False
            return
        if isinstance(item, SwitchConnected):
            self.connected = True
            self._up.set()
            await self._handler(item)
            listings = [self._request_seats()]
            if self._resync is not None:
                listings.append(self._request_listing())
            tasks = [asyncio.create_task(c, name=f"{self.protocol}-resync") for c in listings]
            self._tasks = [t for t in self._tasks if not t.done()] + tasks
            return
        if isinstance(item, SwitchDisconnected):
            self.connected = False
            self._up.clear()
            self._lost_at = wall_clock()
            await self._handler(item)
            return
        if isinstance(payload, ResyncListing):
            await self._apply_listing(payload)
            return
        if isinstance(payload, SeatListing):
            async with self._lock:
                for event in self._adopt_seats(payload.items):
                    await self._handler(event)
            return
        if self.on_item is not None:
            self.on_item()  # counted: events per switch
        self._before_translate(item)
        async with self._lock:
            for event in self._translate(item):
                await self._handler(event)
            for event in self._translate_seats(item):
                await self._handler(event)

    def _before_translate(self, item: object) -> None:  # noqa: B027 - an optional hook
        """A hook for work an item starts outside the stream (FreeSWITCH park holds)."""

    async def _request_listing(self) -> None:
        """List the live channels; the answer joins the event stream where it arrived."""
        candidates = set(self.tracked_calls())
        try:
            items = await self._list_live()
        except Exception as exc:
            log.error("resync: cannot list channels", switch_id=self.switch_id, error=str(exc))
            return
        self._inject(ResyncListing(items, candidates))

    async def _request_seats(self) -> None:
        """List the agent seats; the answer joins the event stream where it arrived."""
        try:
            items = await self._list_seats()
        except Exception as exc:
            log.warning("resync: cannot list seats", switch_id=self.switch_id, error=str(exc))
            return
        if items is not None:
            self._inject(SeatListing(items))

    async def _apply_listing(self, listing: ResyncListing) -> None:
        if self._resync is None:
            return
        calls = self._live_calls(listing.items)
        lost_at = self._lost_at or wall_clock()
        async with self._lock:
            await self._resync(self.switch_id, calls, self, lost_at, listing.candidates)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._expire_every)
            async with self._lock:
                for event in self._expire(time.time()):
                    await self._handler(event)


class _Probe:
    """The marker ``probe()`` sends round the client's stream."""

    __slots__ = ()


async def _cancel(tasks: Sequence[asyncio.Task[None]] | Sequence[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
