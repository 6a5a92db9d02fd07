"""Per-call state kept by the ESL translator: one entry per billing leg in progress."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(slots=True)
class CallState:
    """A call in progress, keyed by its billing leg's Unique-ID (= call id = channel)."""

    call_id: str
    account: str
    caller: str
    callee: str
    started_at: Decimal
    answered_at: Decimal | None = None
    hangup_at: Decimal | None = None  # when the billing leg's CHANNEL_HANGUP was sent
    hangup_cause: str = ""  # its Hangup-Cause name (NORMAL_CLEARING, USER_BUSY, ...)
