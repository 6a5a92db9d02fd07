"""Per-call state kept by the AMI translator (channels grouped by Linkedid)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(slots=True)
class ChannelState:
    """One channel as far as billing needs it."""

    uniqueid: str
    name: str
    linkedid: str
    exten: str  # the extension when the channel was created
    caller: str
    account: str
    created_at: Decimal
    up_at: Decimal | None = None
    hangup_at: Decimal | None = None
    cause: str = ""
    has_cdr: bool = False


@dataclass(slots=True)
class CallState:
    """Every channel of one Linkedid and what is known of its billing leg."""

    linkedid: str
    started_at: Decimal
    channels: dict[str, ChannelState] = field(default_factory=dict)
    a_uid: str | None = None  # the channel running Dial/Queue, once known
    caller: str = ""
    callee: str = ""
    account: str = ""
    answered_at: Decimal | None = None
    statuses: list[str] = field(default_factory=list)
    dial_ends: set[tuple[str, str, str]] = field(default_factory=set)
    no_dial_caller: str | None = None
    started: bool = False
    last_hangup: Decimal | None = None
    adopted: bool = False  # found live on (re)connect, answer time unknown
    cdr_billsec: Decimal | None = None  # the A leg's Cdr BillableSeconds (adopted calls)


@dataclass(frozen=True, slots=True)
class Billing:
    """The billing leg of a call and its derived facts."""

    leg: ChannelState
    caller: str
    callee: str
    account: str
    answered_at: Decimal | None
    disposition: str
