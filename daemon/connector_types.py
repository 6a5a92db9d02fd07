"""What every switch connector shares: the handler and resync types, the wall clock.

A connector owns one protocol client and one translator for one switch: protocol
messages go through the translator, in stream order, and the resulting switch-neutral
events go to the session manager's handler. On every (re)connection it lists the
switch's live calls and injects the listing into its event stream, where it is
reconciled (``daemon/resync.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from connectors.events import Event
from connectors.live_calls import LiveCall
from daemon.resync import ResyncTarget

EventHandler = Callable[[Event], Awaitable[None]]
Resyncer = Callable[
    [str, Sequence[LiveCall], ResyncTarget, Decimal, set[str]], Awaitable[object]
]
"""Reconcile (switch_id, listing, target, lost_at, candidates): see daemon/resync.py."""


@dataclass(frozen=True, slots=True)
class ResyncListing:
    """A channel listing, injected into the event stream at the place it was answered."""

    items: Sequence[Mapping[str, str]]
    candidates: set[str]  # calls tracked when the listing was requested


def wall_clock() -> Decimal:
    """Now, as exact epoch seconds (the switch's clock is assumed NTP-synchronised)."""
    return Decimal(repr(time.time()))


class SwitchConnector(Protocol):
    """What the composition root needs of any switch connector."""

    switch_id: str
    connected: bool

    def start(self) -> None:
        """Start connecting (in the background, reconnecting forever)."""
        ...

    async def close(self) -> None:
        """Stop and disconnect."""
        ...

    async def hangup(self, channel: str, cause: int = 16, reason: str = "") -> None:
        """Cut one channel (``reason``: the daemon's reason code, for the switch's CDR)."""
        ...
