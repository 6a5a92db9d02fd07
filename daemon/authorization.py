"""The authorization contract: what the switch asks and what ratekeeper answers.

Every authorization front end (FastAGI, HTTP, later FreeSWITCH xml_curl and ESL park)
turns its request into an ``AuthorizationRequest``, awaits ``Authorizer.authorize`` and
renders the ``AuthorizationDecision`` in its own protocol. Reason codes are stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Protocol


class Reason(StrEnum):
    """Stable reason codes of an authorization answer (documented in README)."""

    OK = "OK"
    INSUFFICIENT_CREDIT = "INSUFFICIENT_CREDIT"
    CONCURRENCY_LIMIT = "CONCURRENCY_LIMIT"
    SEAT_LIMIT = "SEAT_LIMIT"
    CPS_LIMIT = "CPS_LIMIT"
    NO_RATE = "NO_RATE"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    TRIAL_EXPIRED = "TRIAL_EXPIRED"
    TRIAL_RESTRICTED = "TRIAL_RESTRICTED"
    MARGIN_GUARD = "MARGIN_GUARD"
    BAD_REQUEST = "BAD_REQUEST"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """The switch's question: may this call go ahead?"""

    switch_id: str
    call_id: str  # the switch's reference: agi_uniqueid, Linkedid, FreeSWITCH uuid
    account: str
    caller: str
    callee: str


@dataclass(frozen=True, slots=True)
class Route:
    """One LCR route, in the order the switch should try it."""

    carrier: str
    dial_string: str
    buy_rate: Decimal  # per minute


@dataclass(frozen=True, slots=True)
class AuthorizationDecision:
    """The answer: allow or deny, why, for how long, over which routes."""

    allowed: bool
    reason: Reason
    max_usage: int = 0  # seconds the call may last; 0 when denied
    routes: tuple[Route, ...] = field(default_factory=tuple)
    rate: Decimal | None = None  # retail price per minute, for display
    destination: str = ""

    @property
    def max_usage_ms(self) -> int:
        """``max_usage`` in milliseconds, for Asterisk ``Dial(...,L(ms))``."""
        return self.max_usage * 1000

    def with_routes(self, routes: tuple[Route, ...]) -> AuthorizationDecision:
        """The same decision over ``routes`` (``dataclasses.replace`` costs ~4x more: this
        runs on every authorization with LCR)."""
        return AuthorizationDecision(
            self.allowed, self.reason, self.max_usage, routes, self.rate, self.destination
        )

    @classmethod
    def deny(cls, reason: Reason) -> AuthorizationDecision:
        """A denial with the given reason code."""
        return cls(allowed=False, reason=reason)


class DecisionListener(Protocol):
    """Who is told the decision of ``AuthorizationService.decide_soon`` (once, either)."""

    def decided(self, decision: AuthorizationDecision) -> None:
        """The decision on the call."""

    def failed(self, error: BaseException) -> None:
        """What ``authorize`` would have raised instead of deciding."""


class Authorizer(Protocol):
    """The one authorization service every front end calls."""

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationDecision:
        """Decide on one call; never raises for a business denial."""
        ...
