"""The one authorization service behind FastAGI, HTTP and every other front end.

authorize = find the account -> price the destination -> ONE atomic Redis script that
checks status, concurrency and credit and reserves the first slice -> max_usage from the
credit the call can use. Denials carry a stable ``Reason``; nothing here raises for a
business denial. The reservation key is ``<switch_id>:<call_id>``; the session manager
finds it again when the switch reports the call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

import structlog

from balance.live import LiveState
from daemon.account_directory import AccountDirectory
from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason
from daemon.tariff_catalog import PricedDestination, TariffCatalog
from tariffs.deck import DeckInfo, Rate
from tariffs.money import from_micros, to_micros
from tariffs.rating import call_cost, max_usage

log = structlog.get_logger(__name__)

_LIVE_REASONS = {
    "UNKNOWN_ACCOUNT": Reason.UNKNOWN_ACCOUNT,
    "ACCOUNT_SUSPENDED": Reason.ACCOUNT_SUSPENDED,
    "CONCURRENCY_LIMIT": Reason.CONCURRENCY_LIMIT,
    "INSUFFICIENT_CREDIT": Reason.INSUFFICIENT_CREDIT,
}


@functools.lru_cache(maxsize=65536)
def _slice_costs(info: DeckInfo, rate: Rate, debit_interval: int) -> tuple[int, int]:
    """Micro-units of a call's first slice and of its first second (pure, cached)."""
    return (
        to_micros(call_cost(info, rate, Decimal(debit_interval))),
        to_micros(call_cost(info, rate, Decimal(1))),
    )


def reservation_key(switch_id: str, call_id: str) -> str:
    """The Redis reservation key of one call on one switch."""
    return f"{switch_id}:{call_id}"


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """Tunables of authorization: slice length and the longest call allowed."""

    debit_interval: int = 30
    max_call_duration: int = 10800
    default_rate_deck: str | None = None


class AuthorizationService:
    """Implements ``daemon.authorization.Authorizer`` over accounts, tariffs and Redis."""

    def __init__(
        self,
        accounts: AccountDirectory,
        catalog: TariffCatalog,
        live: LiveState,
        policy: AuthorizationPolicy,
    ) -> None:
        self._accounts = accounts
        self._catalog = catalog
        self._live = live
        self._policy = policy
        self.accepting = True

    @property
    def policy(self) -> AuthorizationPolicy:
        """The policy in force."""
        return self._policy

    async def price(self, account_id: str, callee: str) -> PricedDestination | None:
        """The retail price of a call of ``account_id`` to ``callee`` (None: no rate)."""
        account = await self._accounts.get(account_id)
        if account is None:
            return None
        return self._catalog.price(account.rate_deck or self._policy.default_rate_deck, callee)

    async def currency(self, account_id: str) -> str:
        """The account's currency; ``XXX`` (ISO 4217: no currency) for an unknown account."""
        account = await self._accounts.get(account_id) if account_id else None
        return account.currency if account is not None else "XXX"

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationDecision:
        """Decide on one call and reserve its first slice of credit."""
        if not self.accepting:
            return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE)
        if not request.account or not request.callee:
            return AuthorizationDecision.deny(Reason.BAD_REQUEST)
        account = await self._accounts.get(request.account)
        if account is None:
            return AuthorizationDecision.deny(Reason.UNKNOWN_ACCOUNT)
        if account.status != "active":
            return AuthorizationDecision.deny(Reason.ACCOUNT_SUSPENDED)
        priced = self._catalog.price(
            account.rate_deck or self._policy.default_rate_deck, request.callee
        )
        if priced is None:
            return AuthorizationDecision.deny(Reason.NO_RATE)
        return await self._reserve(request, priced)

    async def _reserve(
        self, request: AuthorizationRequest, priced: PricedDestination
    ) -> AuthorizationDecision:
        key = reservation_key(request.switch_id, request.call_id)
        first_slice, first_increment = _slice_costs(
            priced.info, priced.rate, self._policy.debit_interval
        )
        result = await self._live.reserve(request.account, key, first_slice)
        if not result.ok and result.reason == "INSUFFICIENT_CREDIT":
            # Less than a whole slice is left: a shorter call is still affordable when
            # the remaining credit pays for at least the first increment.
            remaining = result.available_micros
            if remaining >= first_increment and remaining > 0:
                result = await self._live.reserve(request.account, key, remaining)
        if not result.ok:
            return AuthorizationDecision.deny(
                _LIVE_REASONS.get(result.reason, Reason.INSUFFICIENT_CREDIT)
            )
        credit = from_micros(result.reserved_micros + max(result.available_micros, 0))
        seconds = max_usage(priced.info, priced.rate, credit, limit=self._policy.max_call_duration)
        if seconds <= 0:
            await self._live.release(request.account, key)
            return AuthorizationDecision.deny(Reason.INSUFFICIENT_CREDIT)
        return AuthorizationDecision(
            allowed=True,
            reason=Reason.OK,
            max_usage=seconds,
            rate=priced.rate.rate,
            destination=priced.rate.destination,
        )
