"""Translate AMI agent and queue-member events into seat presence (connectors/events.py).

A separate translator from the call translator, fed the same messages. One person is
one seat whatever the number of queues: the seat id is the ``StateInterface`` of a queue
membership (its ``Interface`` when it has none), and an app_agent_pool ``AgentLogin``
(``Agent: 1001``) is seat ``Agent:1001``, the ``StateInterface`` of that agent's queue
memberships. A seat's presences are its agent login and its queue memberships:

* ``AgentLoggedIn`` at the first presence (``AgentLogin``, ``QueueMemberAdded``);
* ``AgentLoggedOut`` when the last one is gone (``AgentLogoff``, ``QueueMemberRemoved``);
* ``QueueMemberPause`` (and ``QueueMemberStatus``) only update the paused state: a paused
  agent still occupies a seat (:meth:`AMISeatTranslator.paused`).

Times are the event's ``Timestamp`` as exact ``Decimal`` (the last one seen when an event
has none). Repeated events change nothing; a stale one (a re-sent add older than the
removal that followed it, a removal older than the presence it would end) is ignored.
The seat's tenant comes from :class:`connectors.seat_tenants.SeatTenantRules`; when a
later presence names another non-empty tenant (the login's AccountCode arriving after
the first queue membership), the seat moves: ``AgentLoggedOut`` from the old tenant and
``AgentLoggedIn`` to the new one, at that event's time. A seat's login AccountCode is
kept for the rest of its session.

List items (``QueueMember``, ``Agents``: answers to QueueStatus / Agents) are ignored by
:meth:`AMISeatTranslator.feed`; after a reconnect the daemon lists both and reconciles
with :meth:`AMISeatTranslator.adopt_listing`. The translator raises no errors: events it
cannot place are ignored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from connectors.ami.parser import AMIMessage
from connectors.events import AgentLoggedIn, AgentLoggedOut, Event
from connectors.seat_tenants import SeatTenantRules

AGENT_PREFIX = "Agent:"
_LOGGED_OFF = frozenset(("", "AGENT_LOGGEDOFF", "AGENT_UNKNOWN"))

MemberKey = tuple[str, str]  # (queue, interface)


def wall_clock() -> Decimal:
    """Now as exact epoch seconds (only for an event without any Timestamp seen yet)."""
    return Decimal(time.time_ns()).scaleb(-9)


@dataclass(slots=True)
class _Membership:
    queue: str
    interface: str
    since: Decimal | None  # the add's Timestamp; None when adopted from a listing
    paused: bool = False
    reason: str = ""


@dataclass(slots=True)
class _Seat:
    agent: str
    tenant: str
    name: str
    account: str = ""  # the login channel's AccountCode, kept for the whole session
    login_since: Decimal | None = None
    logged_in: bool = False
    members: dict[MemberKey, _Membership] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return self.logged_in or bool(self.members)

    def queues(self) -> list[str]:
        return [member.queue for member in self.members.values()]


@dataclass(slots=True)
class _Presence:
    """What one listing says about a seat."""

    name: str = ""
    logged_in: bool = False
    account: str = ""
    members: dict[MemberKey, _Membership] = field(default_factory=dict)


class AMISeatTranslator:
    """Stateful AMI -> seat events for one switch: ``feed``, ``adopt_listing``, queries."""

    def __init__(
        self,
        switch_id: str,
        rules: SeatTenantRules,
        *,
        remember: int = 10_000,
        clock: Callable[[], Decimal] = wall_clock,
    ) -> None:
        self._switch_id = switch_id
        self._rules = rules
        self._remember = remember
        self._clock = clock
        self._seats: dict[str, _Seat] = {}
        self._member_seat: dict[MemberKey, str] = {}
        self._gone_at: OrderedDict[tuple[str, ...], Decimal] = OrderedDict()
        self._last_ts: Decimal | None = None
        self._handlers: dict[str, Callable[[AMIMessage], list[Event]]] = {
            "AgentLogin": self._on_login,
            "Agentlogin": self._on_login,  # chan_agent spelling (Asterisk <= 11)
            "AgentLogoff": self._on_logoff,
            "Agentlogoff": self._on_logoff,
            "QueueMemberAdded": self._on_member_added,
            "QueueMemberRemoved": self._on_member_removed,
            "QueueMemberPause": self._on_member_paused,
            "QueueMemberPaused": self._on_member_paused,  # Asterisk <= 11
            "QueueMemberStatus": self._on_member_paused,
        }

    # -- input -----------------------------------------------------------------------

    def feed(self, message: AMIMessage) -> list[Event]:
        """Seat events (AgentLoggedIn / AgentLoggedOut) caused by one AMI message."""
        handler = self._handlers.get(message.get("Event", ""))
        return [] if handler is None else handler(message)

    def adopt_listing(self, items: Iterable[Mapping[str, str]], now: Decimal) -> list[Event]:
        """Reconcile with a complete listing: QueueStatus (``QueueMember`` items, every
        queue) and Agents (``Agents`` items) answered after a (re)connect; other items are
        skipped. Seats listed but unknown log in at ``now``, known seats not listed log
        out at ``now``; seats in both keep their session and tenant and take the listed
        memberships, login and paused states. Logouts come first, then logins."""
        listed = _listed_presences(items)
        out: list[Event] = []
        for agent in [agent for agent in self._seats if agent not in listed]:
            out.append(self._drop(self._seats[agent], now))
        for agent, presence in listed.items():
            seat = self._seats.get(agent)
            if seat is None:
                seat = self._seats[agent] = _Seat(agent=agent, tenant="", name=presence.name)
                _take(seat, presence)
                seat.tenant = self._tenant(seat)
                out.append(self._in_event(seat, now))
            else:
                _take(seat, presence)
        self._member_seat = {
            key: agent for agent, seat in self._seats.items() for key in seat.members
        }
        return out

    # -- queries ---------------------------------------------------------------------

    def present(self) -> dict[str, str]:
        """The seats present now: seat id -> tenant."""
        return {agent: seat.tenant for agent, seat in self._seats.items()}

    def paused(self, agent: str) -> dict[str, str]:
        """The queues where seat ``agent`` is paused -> the pause reason ("" if none)."""
        seat = self._seats.get(agent)
        if seat is None:
            return {}
        return {m.queue: m.reason for m in seat.members.values() if m.paused}

    def logoff_actions(self, agent: str) -> list[dict[str, str]]:
        """The AMI actions that log seat ``agent`` off, each with its ``Action`` name:
        ``AgentLogoff`` for an ``Agent:`` seat (sent even when its login is not seen
        yet), then one ``QueueRemove`` per queue membership it holds."""
        actions: list[dict[str, str]] = []
        if agent.startswith(AGENT_PREFIX):
            actions.append({"Action": "AgentLogoff", "Agent": agent.removeprefix(AGENT_PREFIX)})
        seat = self._seats.get(agent)
        for member in seat.members.values() if seat is not None else ():
            actions.append(
                {"Action": "QueueRemove", "Queue": member.queue, "Interface": member.interface}
            )
        return actions

    # -- handlers --------------------------------------------------------------------

    def _on_login(self, msg: AMIMessage) -> list[Event]:
        number = msg.get("Agent", "")
        if not number:
            return []
        agent = AGENT_PREFIX + number
        at = self._timestamp(msg)
        seat = self._seats.get(agent)
        if (seat is not None and seat.logged_in) or self._is_stale(("login", agent), at):
            return []
        seat, is_new = self._seat_for(agent, msg.get("CallerIDName", ""))
        seat.logged_in, seat.login_since = True, at
        seat.account = msg.get("AccountCode", "") or seat.account
        return self._gained(seat, is_new, at)

    def _on_logoff(self, msg: AMIMessage) -> list[Event]:
        agent = AGENT_PREFIX + msg.get("Agent", "")
        seat = self._seats.get(agent)
        at = self._timestamp(msg)
        if seat is None or not seat.logged_in or _older(at, seat.login_since):
            return []
        seat.logged_in, seat.login_since = False, None
        self._remember_gone(("login", agent), at)
        return self._maybe_gone(seat, at)

    def _on_member_added(self, msg: AMIMessage) -> list[Event]:
        queue, interface = msg.get("Queue", ""), _interface(msg)
        if not queue or not interface:
            return []
        key = (queue, interface)
        at = self._timestamp(msg)
        if key in self._member_seat or self._is_stale(("member", *key), at):
            return []
        agent = msg.get("StateInterface") or interface
        seat, is_new = self._seat_for(agent, msg.get("MemberName") or msg.get("Name", ""))
        seat.members[key] = _Membership(queue, interface, at, *_pause_of(msg))
        self._member_seat[key] = agent
        return self._gained(seat, is_new, at)

    def _on_member_removed(self, msg: AMIMessage) -> list[Event]:
        key = (msg.get("Queue", ""), _interface(msg))
        seat = self._seats.get(self._member_seat.get(key, ""))
        at = self._timestamp(msg)
        if seat is None or _older(at, seat.members[key].since):
            return []
        del seat.members[key]
        del self._member_seat[key]
        self._remember_gone(("member", *key), at)
        return self._maybe_gone(seat, at)

    def _on_member_paused(self, msg: AMIMessage) -> list[Event]:
        key = (msg.get("Queue", ""), _interface(msg))
        seat = self._seats.get(self._member_seat.get(key, ""))
        if seat is not None and "Paused" in msg:
            member = seat.members[key]
            member.paused, member.reason = _pause_of(msg)
        return []

    # -- seat life -------------------------------------------------------------------

    def _seat_for(self, agent: str, name: str) -> tuple[_Seat, bool]:
        """The seat ``agent`` and whether it is new (absent until now)."""
        seat = self._seats.get(agent)
        if seat is None:
            seat = self._seats[agent] = _Seat(agent=agent, tenant="", name=name)
            return seat, True
        seat.name = seat.name or name
        return seat, False

    def _gained(self, seat: _Seat, is_new: bool, at: Decimal) -> list[Event]:
        """Events after ``seat`` gained a presence: its login, or a move of tenant."""
        tenant = self._tenant(seat)
        if is_new:
            seat.tenant = tenant
            return [self._in_event(seat, at)]
        if not tenant or tenant == seat.tenant:
            return []
        moved_out = self._out_event(seat, at)
        seat.tenant = tenant
        return [moved_out, self._in_event(seat, at)]

    def _maybe_gone(self, seat: _Seat, at: Decimal) -> list[Event]:
        return [] if seat.present else [self._drop(seat, at)]

    def _drop(self, seat: _Seat, at: Decimal) -> AgentLoggedOut:
        """Forget ``seat`` with every presence of it; its AgentLoggedOut event."""
        del self._seats[seat.agent]
        for key in seat.members:
            self._member_seat.pop(key, None)
        return self._out_event(seat, at)

    def _in_event(self, seat: _Seat, at: Decimal) -> AgentLoggedIn:
        return AgentLoggedIn(
            switch_id=self._switch_id, tenant=seat.tenant, agent=seat.agent, at=at, name=seat.name
        )

    def _out_event(self, seat: _Seat, at: Decimal) -> AgentLoggedOut:
        return AgentLoggedOut(
            switch_id=self._switch_id, tenant=seat.tenant, agent=seat.agent, at=at
        )

    def _tenant(self, seat: _Seat) -> str:
        return self._rules.tenant_for(seat.agent, account=seat.account, queues=seat.queues())

    # -- time and staleness ----------------------------------------------------------

    def _timestamp(self, msg: AMIMessage) -> Decimal:
        text = msg.get("Timestamp")
        if text:
            try:
                value = Decimal(text)
            except InvalidOperation:
                value = None
            if value is not None and value.is_finite():
                self._last_ts = value
                return value
        if self._last_ts is None:
            return self._clock()
        return self._last_ts

    def _is_stale(self, key: tuple[str, ...], at: Decimal) -> bool:
        """True for a presence event not newer than the removal of that presence."""
        gone = self._gone_at.get(key)
        return gone is not None and at <= gone

    def _remember_gone(self, key: tuple[str, ...], at: Decimal) -> None:
        self._gone_at[key] = at
        self._gone_at.move_to_end(key)
        while len(self._gone_at) > self._remember:
            self._gone_at.popitem(last=False)


def _older(at: Decimal, since: Decimal | None) -> bool:
    """True when an ending event is older than the presence it would end (stale)."""
    return since is not None and at < since


def _take(seat: _Seat, presence: _Presence) -> None:
    """Give ``seat`` the presences a listing found for it (its session goes on)."""
    seat.logged_in = presence.logged_in
    seat.login_since = None
    seat.account = presence.account or seat.account
    seat.members = presence.members
    seat.name = seat.name or presence.name


def _interface(msg: Mapping[str, str]) -> str:
    """A membership's interface (``Interface``; ``Location`` in list items, Asterisk 11)."""
    return msg.get("Interface") or msg.get("Location", "")


def _pause_of(msg: Mapping[str, str]) -> tuple[bool, str]:
    paused = msg.get("Paused", "0") == "1"
    return paused, msg.get("PausedReason", "") if paused else ""


def _listed_presences(items: Iterable[Mapping[str, str]]) -> dict[str, _Presence]:
    """Seat id -> what the listing says, in listing order (logged-off agents left out)."""
    listed: dict[str, _Presence] = {}
    for item in items:
        kind = item.get("Event", "")
        if kind == "Agents":
            number = item.get("Agent", "")
            if not number or item.get("Status", "") in _LOGGED_OFF:
                continue
            presence = listed.setdefault(AGENT_PREFIX + number, _Presence())
            presence.logged_in = True
            presence.account = item.get("AccountCode", "")
            presence.name = presence.name or item.get("Name", "")
        elif kind == "QueueMember":
            queue, interface = item.get("Queue", ""), _interface(item)
            if not queue or not interface:
                continue
            agent = item.get("StateInterface") or interface
            presence = listed.setdefault(agent, _Presence())
            presence.members[(queue, interface)] = _Membership(
                queue, interface, None, *_pause_of(item)
            )
            presence.name = presence.name or item.get("Name") or item.get("MemberName", "")
    return listed
