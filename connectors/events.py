"""Switch-neutral events: what every connector translates its protocol into.

Connectors translate; they never touch balances. Events of one call are delivered in
order. Times are the switch's epoch seconds as exact ``Decimal`` (parsed from the text
the switch sent, never through a float).

    Event
    ├── CallStarted    a billable call began (its billing leg was created)
    ├── CallAnswered   the billing leg was answered (billing starts)
    ├── CallEnded      the call is over and final: everything needed to rate it
    ├── AgentLoggedIn / AgentLoggedOut   seat presence (issue 5)
    └── SwitchConnected / SwitchDisconnected   connector state
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call began: its billing leg (Asterisk: the channel running Dial/Queue) exists."""

    switch_id: str
    call_id: str  # the switch's id for the whole call (Asterisk Linkedid, FreeSWITCH
    # billing-leg uuid, see connectors/esl/legs.py)
    leg_id: str  # the billing leg's channel id (Asterisk Uniqueid, FreeSWITCH Unique-ID)
    channel: str  # channel name, what a hangup action needs
    account: str  # accountcode, "" when the switch gave none
    caller: str
    callee: str
    at: Decimal


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The billing leg was answered: billable time starts at ``at``."""

    switch_id: str
    call_id: str
    leg_id: str
    channel: str
    account: str
    at: Decimal


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is final (all legs hung up, CDRs seen or grace period over)."""

    switch_id: str
    call_id: str
    leg_id: str
    channel: str
    account: str
    caller: str
    callee: str
    answered: bool
    started_at: Decimal
    answered_at: Decimal | None
    ended_at: Decimal
    billsec: Decimal  # exact talk time as the switch measured it (Asterisk: ended_at -
    # answered_at; FreeSWITCH: billmsec / 1000), 0 when not answered
    cause: str  # Q.850 cause code of the billing leg, as text ("16")
    disposition: str  # ANSWER, NOANSWER, BUSY, CONGESTION, CANCEL, FAILED


@dataclass(frozen=True, slots=True)
class AgentLoggedIn:
    """An agent seat became present (agent login, first queue membership, callcenter
    agent status other than Logged Out). One person is one seat whatever the number of
    queues they are a member of.

    ``agent`` is the seat id on its switch: Asterisk ``Agent:1001`` (app_agent_pool, the
    ``StateInterface`` of its queue memberships) or the member's state interface
    (``Local/1002@agents/n``, ``PJSIP/1002``); FreeSWITCH the callcenter agent name
    (``1001@default``). ``tenant`` is "" when no rule names the seat's tenant.
    """

    switch_id: str
    tenant: str
    agent: str
    at: Decimal
    name: str = ""  # display name (MemberName, CallerIDName), informational


@dataclass(frozen=True, slots=True)
class AgentLoggedOut:
    """An agent seat went away (logoff, last queue membership removed, Logged Out)."""

    switch_id: str
    tenant: str
    agent: str
    at: Decimal


@dataclass(frozen=True, slots=True)
class SwitchConnected:
    """A connector (re)connected and logged in to its switch."""

    switch_id: str


@dataclass(frozen=True, slots=True)
class SwitchDisconnected:
    """A connector lost its switch; it will reconnect with backoff."""

    switch_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Marker:
    """An item a connector put in its client's event stream (``inject``), delivered to it
    in its place among the switch's messages (resync listings)."""

    payload: object


CallEvent = CallStarted | CallAnswered | CallEnded
Event = CallEvent | AgentLoggedIn | AgentLoggedOut | SwitchConnected | SwitchDisconnected
