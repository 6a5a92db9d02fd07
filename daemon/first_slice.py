"""The first slice of a call's credit: what it costs, reserving it, what it allows.

Per rate in force, the first slice (one ``debit_interval``), the first increment and the
longest call (``max_call_duration``) in micro-units, computed once per rate object
(``figures``). Reserving the slice on the account (``reserve``): when less than a slice
is left, a shorter call is reserved if the remaining credit pays for the first increment;
a reservation that allows not one second is given back. What the reserved credit allows
is the call's ``max_usage`` (``allowance``). ``decision_for`` is the decision a first
reply makes without more Redis work, for a caller that goes on from a callback
(``AuthorizationService.decide_soon``); ``reserve_rest`` is that more work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

from balance.live import LiveState, Reservation
from daemon.authorization import AuthorizationDecision, Reason
from daemon.tariff_catalog import PricedDestination
from tariffs.bundles import CallTerms, terms_max_usage
from tariffs.deck import DeckInfo, Rate
from tariffs.money import from_micros, to_micros
from tariffs.rating import call_cost, cost_micros, max_usage_micros

LIVE_REASONS = {  # the live state's reason codes as the answer's
    "UNKNOWN_ACCOUNT": Reason.UNKNOWN_ACCOUNT,
    "ACCOUNT_SUSPENDED": Reason.ACCOUNT_SUSPENDED,
    "TRIAL_EXPIRED": Reason.TRIAL_EXPIRED,
    "CONCURRENCY_LIMIT": Reason.CONCURRENCY_LIMIT,
    "CPS_LIMIT": Reason.CPS_LIMIT,
    "INSUFFICIENT_CREDIT": Reason.INSUFFICIENT_CREDIT,
}


_RATE_FIGURES_KEPT = 65_536  # rates whose figures are kept (``figures``)


def _slice_costs(info: DeckInfo, rate: Rate, debit_interval: int) -> tuple[int, int]:
    """Micro-units of a call's first slice and of its first second (pure; kept per rate
    by ``FirstSlice.figures``)."""
    return (
        to_micros(call_cost(info, rate, Decimal(debit_interval))),
        to_micros(call_cost(info, rate, Decimal(1))),
    )


class FirstSlice:
    """The first slice of a call's credit on one live state, under one policy."""

    def __init__(self, live: LiveState, *, debit_interval: int, max_call_duration: int) -> None:
        self._live = live
        self._debit_interval = debit_interval
        self._max_call_duration = max_call_duration
        # per rate in force: its first slice, first increment and longest call
        self._rate_figures: dict[int, tuple[Rate, DeckInfo, tuple[int, int, int]]] = {}

    def figures(self, info: DeckInfo, rate: Rate) -> tuple[int, int, int]:
        """The rate's first slice, first increment and ``max_call_duration`` call, in
        micro-units, computed once per rate object (kept by identity: hashing a rate and
        its deck, as a cache keyed by value does, costs more than the lookup saves)."""
        found = self._rate_figures.get(id(rate))
        if found is not None and found[0] is rate and found[1] is info:
            return found[2]
        figures = (
            *_slice_costs(info, rate, self._debit_interval),
            cost_micros(info, rate, self._max_call_duration),
        )
        if len(self._rate_figures) >= _RATE_FIGURES_KEPT:
            self._rate_figures.clear()  # decks were replaced many times: start over
        # the rate is kept alive with its figures, so its id is never another rate's
        self._rate_figures[id(rate)] = (rate, info, figures)
        return figures

    async def reserve(
        self,
        account_id: str,
        key: str,
        priced: PricedDestination,
        first_slice: int,
        first_increment: int,
        reachable: CallTerms,
        reserve: Callable[[int], Awaitable[Reservation]] | None = None,
    ) -> AuthorizationDecision:
        """Reserve the first slice's money; max_usage from the credit (and bundle) it can use.

        ``reserve(amount)`` reserves on the account (default: ``LiveState.reserve``).
        """
        result = await (
            self._live.reserve(account_id, key, first_slice)
            if reserve is None
            else reserve(first_slice)
        )
        decision = self.decision_for(result, priced, first_increment, reachable)
        if decision is None:
            decision = await self.reserve_rest(account_id, key, result, priced, reachable, reserve)
        return decision

    def decision_for(
        self,
        result: Reservation,
        priced: PricedDestination,
        first_increment: int,
        reachable: CallTerms,
    ) -> AuthorizationDecision | None:
        """The decision a first ``reserve``'s result makes; None when it takes more Redis
        work (``reserve_rest``): a shorter call to reserve, or a reservation that allows
        no second to give back. ``reachable``: the terms the credit can use."""
        if result.ok:
            return self.allowance(result, priced, reachable)
        remaining = result.available_micros
        if (
            result.reason == "INSUFFICIENT_CREDIT"
            and remaining >= first_increment
            and remaining > 0
        ):
            # Less than a whole slice is left: a shorter call is still affordable when
            # the remaining credit pays for at least the first increment.
            return None
        return AuthorizationDecision.deny(
            LIVE_REASONS.get(result.reason, Reason.INSUFFICIENT_CREDIT)
        )

    async def reserve_rest(
        self,
        account_id: str,
        key: str,
        result: Reservation,
        priced: PricedDestination,
        reachable: CallTerms,
        reserve: Callable[[int], Awaitable[Reservation]] | None,
    ) -> AuthorizationDecision:
        """What ``decision_for`` left: reserve the shorter call the remaining credit pays
        for, or give back a reservation that allows no second."""
        if not result.ok:
            remaining = result.available_micros
            result = await (
                self._live.reserve(account_id, key, remaining)
                if reserve is None
                else reserve(remaining)
            )
            if not result.ok:
                return AuthorizationDecision.deny(
                    LIVE_REASONS.get(result.reason, Reason.INSUFFICIENT_CREDIT)
                )
            decision = self.allowance(result, priced, reachable)
            if decision is not None:
                return decision
        await self._live.release(account_id, key, refund=True)
        return AuthorizationDecision.deny(Reason.INSUFFICIENT_CREDIT)

    def allowance(
        self, result: Reservation, priced: PricedDestination, reachable: CallTerms
    ) -> AuthorizationDecision | None:
        """The allowance of a made reservation: max_usage from the credit (and bundle) it
        can use; None when that is not one second."""
        credit = result.reserved_micros + max(result.available_micros, 0)
        limit = self._max_call_duration
        if reachable.plain:  # integer short-cut when the credit pays for the longest call
            longest = self.figures(priced.info, priced.rate)[2]
            seconds = max_usage_micros(priced.info, priced.rate, credit, limit, longest)
        else:
            seconds = terms_max_usage(
                priced.info, priced.rate, from_micros(credit), reachable, limit=limit
            )
        if seconds <= 0:
            return None
        terms = priced.terms
        return AuthorizationDecision(
            allowed=True,
            reason=Reason.OK,
            max_usage=seconds,
            rate=priced.rate.rate if terms.plain else terms.start_rate(priced.rate).rate,
            destination=priced.rate.destination,
        )
