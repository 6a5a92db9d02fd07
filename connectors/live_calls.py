"""A switch's own list of its live calls, switch-neutral, for resync on (re)connect.

Each connector turns its switch's channel listing (Asterisk ``CoreShowChannels``,
FreeSWITCH ``show channels as json``) into ``LiveCall`` rows, one per call, keyed by the
same ``call_id`` and ``leg_id`` its translator uses in events. The daemon compares them
with the calls it tracks (``daemon/resync.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class LiveCall:
    """One call the switch reports as live, seen from its billing leg."""

    call_id: str
    leg_id: str
    channel: str  # what a hangup needs (Asterisk channel name, FreeSWITCH uuid)
    account: str
    caller: str
    callee: str
    started_at: Decimal
    answered: bool
