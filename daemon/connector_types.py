"""Types every switch connector shares: the event handler and resync types, the wall
clock. The connectors themselves share ``daemon.connector_base.ConnectorBase``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from connectors.events import Event
from connectors.live_calls import LiveCall
from daemon.resync import ResyncTarget

EventHandler = Callable[[Event], Awaitable[None]]
Resyncer = Callable[[str, Sequence[LiveCall], ResyncTarget, Decimal, set[str]], Awaitable[object]]
"""Reconcile (switch_id, listing, target, lost_at, candidates): see daemon/resync.py."""


@dataclass(frozen=True, slots=True)
class ResyncListing:
    """A channel listing, injected into the event stream at the place it was answered."""

    items: Sequence[Mapping[str, str]]
    candidates: set[str]  # calls tracked when the listing was requested


@dataclass(frozen=True, slots=True)
class SeatListing:
    """The switch's agent seats (AMI QueueStatus + Agents items, ESL ``callcenter_config
    agent list`` text), injected into the event stream where it was answered."""

    items: object


def wall_clock() -> Decimal:
    """Now, as exact epoch seconds (the switch's clock is assumed NTP-synchronised)."""
    return Decimal(repr(time.time()))
