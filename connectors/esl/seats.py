"""Translate FreeSWITCH mod_callcenter events into seat presence (connectors/events.py).

A separate translator from the call translator, fed the same events. The seat id is the
callcenter agent name (``1001@default``). Only CUSTOM ``callcenter::info`` events count:

* ``agent-status-change``: ``CC-Agent-Status`` ``Available``, ``Available (On Demand)``
  or ``On Break`` makes the agent present (``AgentLoggedIn`` when it was not), ``Logged
  Out`` makes it gone (``AgentLoggedOut``); a change between present statuses (a break)
  keeps the seat, as does a repeated status. Other statuses are ignored.
* ``agent-state-change`` (Waiting, Receiving, In a queue call, ...) never changes presence.
* An event naming both the agent and a queue (``agent-offering``, ``bridge-agent-start``,
  ...) tells a queue of the seat, for the ``by_queue`` tenant rule.

Times are ``Event-Date-Timestamp`` (epoch µs) as exact ``Decimal`` seconds. A status
change older than the last one applied to that agent is stale and ignored (equal times
apply in stream order: the switch stamps at ~20 ms granularity). The tenant comes from
:class:`connectors.seat_tenants.SeatTenantRules`; when a queue learned later names
another non-empty tenant, the seat moves (``AgentLoggedOut`` from the old tenant,
``AgentLoggedIn`` to the new one, at that event's time).

After a (re)connect the daemon reconciles with ``api callcenter_config agent list``
(:meth:`ESLSeatTranslator.adopt_listing`); a seat is logged off with
:meth:`ESLSeatTranslator.logoff_command` sent as ``api``. The translator raises no
errors for events; a listing it cannot read raises ``ValueError`` naming the culprit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from connectors.esl import cdr
from connectors.esl.parser import ESLEvent
from connectors.events import AgentLoggedIn, AgentLoggedOut, Event
from connectors.seat_tenants import SeatTenantRules

PRESENT_STATUSES = frozenset(("Available", "Available (On Demand)", "On Break"))
LOGGED_OUT = "Logged Out"
_SUBCLASS = "callcenter::info"
_UNSAFE = frozenset("'\"`\\")
_EXCERPT = 120


def wall_clock() -> Decimal:
    """Now as exact epoch seconds (only for an event without any timestamp seen yet)."""
    return Decimal(time.time_ns()).scaleb(-9)


def parse_agent_list(text: str) -> dict[str, str]:
    """Agent name -> status from a ``callcenter_config agent list`` answer.

    The answer is a ``|``-separated header line (``name|instance_id|uuid|type|contact|
    status|state|...``), one row per agent, then ``+OK``. A row with extra ``|`` (inside
    its contact string) is read from both ends. ValueError, naming the culprit, for an
    error answer, a header without ``name`` and ``status`` or a row too short.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].startswith(("-ERR", "-USAGE")):
        raise ValueError(f"callcenter agent list: not a table: {text[:_EXCERPT]!r}")
    header = lines[0].split("|")
    if "name" not in header or "status" not in header:
        raise ValueError(f"callcenter agent list: header lacks name|status: {lines[0]!r}")
    name_at, status_from_end = header.index("name"), header.index("status") - len(header)
    statuses: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "+OK":
            break
        row = line.split("|")
        if len(row) < len(header):
            raise ValueError(f"callcenter agent list: row has too few columns: {line!r}")
        name = row[name_at]
        if name:
            statuses[name] = row[status_from_end]
    return statuses


def logoff_command(agent: str) -> str:
    """The ``api`` command that logs callcenter agent ``agent`` off.

    ValueError naming the agent when the name could not be sent safely (empty, a space,
    a quote, a backslash, a line break or another control character: it would change
    the command or inject a second one).
    """
    if not agent or any(c.isspace() or c in _UNSAFE or ord(c) < 32 or c == "\x7f" for c in agent):
        raise ValueError(f"unsafe callcenter agent name for an ESL command: {agent!r}")
    return f"callcenter_config agent set status {agent} '{LOGGED_OUT}'"


@dataclass(slots=True)
class _Seat:
    agent: str
    tenant: str
    status: str
    state: str = ""
    queues: list[str] = field(default_factory=list)


class ESLSeatTranslator:
    """Stateful callcenter events -> seat events for one FreeSWITCH; queries for the daemon."""

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
        self._changed_at: OrderedDict[str, Decimal] = OrderedDict()
        self._last_ts: Decimal | None = None

    # -- input -----------------------------------------------------------------------

    def feed(self, event: ESLEvent) -> list[Event]:
        """Seat events (AgentLoggedIn / AgentLoggedOut) caused by one ESL event."""
        if event.get("Event-Subclass") != _SUBCLASS or event.get("Event-Name") != "CUSTOM":
            return []
        agent = event.get("CC-Agent", "")
        if not agent:
            return []
        at = self._timestamp(event)
        action = event.get("CC-Action", "")
        if action == "agent-status-change":
            return self._status_changed(agent, event.get("CC-Agent-Status", ""), at)
        seat = self._seats.get(agent)
        if seat is None:
            return []
        if action == "agent-state-change":
            seat.state = event.get("CC-Agent-State", seat.state)
            return []
        queue = event.get("CC-Queue", "")
        if not queue or queue in seat.queues:
            return []
        seat.queues.append(queue)
        return self._retenant(seat, at)

    def adopt_listing(self, text: str, now: Decimal) -> list[Event]:
        """Reconcile with a ``callcenter_config agent list`` answer (every agent).

        Agents listed with a present status but unknown log in at ``now``; known seats
        listed Logged Out or not listed log out at ``now``; seats in both keep their
        session and take the listed status. Logouts first, then logins. ValueError when
        the text is not an agent list (see :func:`parse_agent_list`).
        """
        listed = {
            agent: status
            for agent, status in parse_agent_list(text).items()
            if status in PRESENT_STATUSES
        }
        out: list[Event] = []
        for agent in [agent for agent in self._seats if agent not in listed]:
            out.append(self._drop(self._seats[agent], now))
        for agent, status in listed.items():
            seat = self._seats.get(agent)
            if seat is None:
                out.append(self._login(agent, status, now))
            else:
                seat.status = status
        return out

    # -- queries ---------------------------------------------------------------------

    def present(self) -> dict[str, str]:
        """The seats present now: agent name -> tenant."""
        return {agent: seat.tenant for agent, seat in self._seats.items()}

    def status(self, agent: str) -> str:
        """The callcenter status of a present seat (``On Break``, ...), "" when absent."""
        seat = self._seats.get(agent)
        return "" if seat is None else seat.status

    def state(self, agent: str) -> str:
        """The last callcenter state of a present seat (``Waiting``, ...), "" if unknown."""
        seat = self._seats.get(agent)
        return "" if seat is None else seat.state

    def logoff_command(self, agent: str) -> str:
        """``callcenter_config agent set status <agent> 'Logged Out'`` for ``api``
        (ValueError naming an agent name unsafe in a command, see :func:`logoff_command`)."""
        return logoff_command(agent)

    # -- seat life -------------------------------------------------------------------

    def _status_changed(self, agent: str, status: str, at: Decimal) -> list[Event]:
        if status != LOGGED_OUT and status not in PRESENT_STATUSES:
            return []
        last = self._changed_at.get(agent)
        if last is not None and at < last:
            return []  # stale: an older change arriving late
        self._changed_at[agent] = at
        self._changed_at.move_to_end(agent)
        while len(self._changed_at) > self._remember:
            self._changed_at.popitem(last=False)
        seat = self._seats.get(agent)
        if status == LOGGED_OUT:
            return [] if seat is None else [self._drop(seat, at)]
        if seat is not None:
            seat.status = status
            return []
        return [self._login(agent, status, at)]

    def _login(self, agent: str, status: str, at: Decimal) -> AgentLoggedIn:
        seat = self._seats[agent] = _Seat(agent, self._rules.tenant_for(agent), status)
        return AgentLoggedIn(switch_id=self._switch_id, tenant=seat.tenant, agent=agent, at=at)

    def _drop(self, seat: _Seat, at: Decimal) -> AgentLoggedOut:
        del self._seats[seat.agent]
        return AgentLoggedOut(
            switch_id=self._switch_id, tenant=seat.tenant, agent=seat.agent, at=at
        )

    def _retenant(self, seat: _Seat, at: Decimal) -> list[Event]:
        tenant = self._rules.tenant_for(seat.agent, queues=seat.queues)
        if not tenant or tenant == seat.tenant:
            return []
        out: list[Event] = [
            AgentLoggedOut(switch_id=self._switch_id, tenant=seat.tenant, agent=seat.agent, at=at)
        ]
        seat.tenant = tenant
        out.append(AgentLoggedIn(switch_id=self._switch_id, tenant=tenant, agent=seat.agent, at=at))
        return out

    def _timestamp(self, event: ESLEvent) -> Decimal:
        value = cdr.micros(event.get("Event-Date-Timestamp"))
        if value is not None:
            self._last_ts = value
            return value
        return self._clock() if self._last_ts is None else self._last_ts
