"""Reseller chains in real time: price, reserve, extend and settle every level of a call.

The model (see also ``balance.chain_ledger``): an account's rate deck is its RETAIL price,
set by its reseller (``Account.parent_id``); the reseller's own ``rate_deck`` is its
WHOLESALE price, from the platform or from ITS reseller. The chain of a call is the run
of ancestors that have their own rate deck, from the customer's reseller upward, at most
:data:`MAX_CHAIN_DEPTH` levels: it stops at the first ancestor without a deck (that one
and everything above it are the platform), and a level past the bound is not priced (the
last priced reseller pays the platform). A reseller with a deck but no rate for the
number denies the call with ``NO_RATE``: it cannot buy what it sells. Each level is priced
by its own deck, in its own time zone, at the call's start.

Authorization: EVERY account of the chain, the customer included, prepaid or postpaid
(``balance + credit_limit`` is what Redis checks), gets a reservation of the first slice
at its own price, under the same reservation key. The reserves run concurrently, one
atomic script per account (accounts of a chain have different hash tags, so no single
script could span them on Redis Cluster); a denial anywhere denies the call with the
reason of the account nearest to the customer that failed, and releases what the others
got. ``max_usage`` is the SHORTEST of the levels'. Because each account's check and
reservation is atomic, N parallel calls through one reseller whose credit covers K
first wholesale slices get exactly K allowances (the others' customer reservations are
released right away; a customer can be denied for a moment by a sibling call's
reservation, never overdrawn).

Debit loop: :class:`ChainHold` extends every level's reservation to the same number of
seconds as the customer's and answers the seconds the whole chain covers.

Settlement: :func:`settle_chain` settles each level's reservation at its own wholesale
cost and credits the reseller the retail it sold (the hot balance mirrors the ledger's
``sold`` entry, once per call by its key); a duplicate only releases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import structlog

from balance.accounts import Account
from balance.chain_ledger import ChainCharge
from balance.live import LiveState
from balance.rated_calls import RatedCallRecord
from daemon.account_directory import AccountDirectory
from daemon.authorization import AuthorizationDecision, Reason
from daemon.tariff_catalog import PricedDestination, TariffCatalog
from tariffs.deck import DeckInfo, Rate
from tariffs.money import from_micros, to_micros
from tariffs.rating import call_cost, max_usage

log = structlog.get_logger(__name__)

MAX_CHAIN_DEPTH = 4
"""Reseller levels priced above a customer (the platform is above the last one)."""

_REASONS = {
    "UNKNOWN_ACCOUNT": Reason.UNKNOWN_ACCOUNT,
    "ACCOUNT_SUSPENDED": Reason.ACCOUNT_SUSPENDED,
    "CONCURRENCY_LIMIT": Reason.CONCURRENCY_LIMIT,
    "INSUFFICIENT_CREDIT": Reason.INSUFFICIENT_CREDIT,
}


@dataclass(frozen=True, slots=True)
class ChainLevel:
    """One reseller above a call's account and its wholesale price for the call."""

    level: int  # 1 = the customer's reseller
    account_id: str
    info: DeckInfo
    rate: Rate


@functools.lru_cache(maxsize=65536)
def _slice_costs(info: DeckInfo, rate: Rate, debit_interval: int) -> tuple[int, int]:
    """Micro-units of a first slice and of a first second at one price (pure, cached)."""
    return (
        to_micros(call_cost(info, rate, Decimal(debit_interval))),
        to_micros(call_cost(info, rate, Decimal(1))),
    )


def chain_charges(priced: PricedDestination | None, duration: Decimal) -> tuple[ChainCharge, ...]:
    """What each reseller of the call's chain pays for ``duration`` (its wholesale cost)."""
    if priced is None or not priced.chain:
        return ()
    return tuple(
        ChainCharge(
            level=level.level,
            account_id=level.account_id,
            cost_micros=to_micros(call_cost(level.info, level.rate, duration)),
            deck=level.info.name,
            rate_micros=to_micros(level.rate.rate),
        )
        for level in priced.chain
    )


class ResellerChains:
    """Prices and reserves the reseller chain of a call (no I/O but the directory and Redis)."""

    def __init__(
        self,
        accounts: AccountDirectory,
        catalog: TariffCatalog,
        live: LiveState,
        *,
        debit_interval: int,
        max_call_duration: int,
    ) -> None:
        self._accounts = accounts
        self._catalog = catalog
        self._live = live
        self._debit_interval = debit_interval
        self._max_call_duration = max_call_duration

    async def attach(
        self, account: Account, callee: str, priced: PricedDestination, at: datetime | None
    ) -> PricedDestination | None:
        """``priced`` with the chain's wholesale prices; None when a reseller has no rate.

        An account without a reseller (or whose reseller has no deck) gets ``priced`` back
        unchanged.
        """
        levels: list[ChainLevel] = []
        parent_id = account.parent_id
        while parent_id is not None and len(levels) < MAX_CHAIN_DEPTH:
            reseller = await self._accounts.get(parent_id)
            if reseller is None or reseller.rate_deck is None:
                break
            try:
                wholesale = self._catalog.price(reseller.rate_deck, callee, at, reseller.timezone)
            except ValueError:  # an unknown time zone: priced as if in UTC
                wholesale = self._catalog.price(reseller.rate_deck, callee, at)
            if wholesale is None:
                log.info("no wholesale rate", reseller=reseller.id, deck=reseller.rate_deck)
                return None
            levels.append(ChainLevel(len(levels) + 1, reseller.id, wholesale.info, wholesale.rate))
            parent_id = reseller.parent_id
        if not levels:
            return priced
        return dataclasses.replace(priced, chain=tuple(levels))

    async def reserve(
        self, account_id: str, key: str, priced: PricedDestination
    ) -> AuthorizationDecision:
        """Reserve a first slice on every account of the chain; the shortest max_usage."""
        prices = [(account_id, priced.info, priced.rate)]
        prices += [(level.account_id, level.info, level.rate) for level in priced.chain]
        outcomes = await asyncio.gather(
            *(self._reserve_one(account, key, info, rate) for account, info, rate in prices)
        )
        denied = next((reason for reason, _, _ in outcomes if reason != "OK"), None)
        if denied is not None:
            held = [p[0] for p, (_, _, got) in zip(prices, outcomes, strict=True) if got]
            await asyncio.gather(
                *(self._live.release(account, key, refund=True) for account in held)
            )
            log.info("chain denied", reason=denied, accounts=[p[0] for p in prices])
            return AuthorizationDecision.deny(_REASONS.get(denied, Reason.INSUFFICIENT_CREDIT))
        return AuthorizationDecision(
            allowed=True,
            reason=Reason.OK,
            max_usage=min(seconds for _, seconds, _ in outcomes),
            rate=priced.rate.rate,
            destination=priced.rate.destination,
        )

    async def _reserve_one(
        self, account_id: str, key: str, info: DeckInfo, rate: Rate
    ) -> tuple[str, int, bool]:
        """(reason, max_usage, whether a reservation is held) for one account."""
        first_slice, first_increment = _slice_costs(info, rate, self._debit_interval)
        result = await self._live.reserve(account_id, key, first_slice)
        if not result.ok and result.reason == "INSUFFICIENT_CREDIT":
            remaining = result.available_micros  # a shorter call may still be affordable
            if remaining >= first_increment and remaining > 0:
                result = await self._live.reserve(account_id, key, remaining)
        if not result.ok:
            return result.reason, 0, False
        credit = from_micros(result.reserved_micros + max(result.available_micros, 0))
        seconds = max_usage(info, rate, credit, limit=self._max_call_duration)
        return ("OK" if seconds > 0 else "INSUFFICIENT_CREDIT"), seconds, True


@dataclass(slots=True)
class ChainHold:
    """The reseller levels' reservations of one live call, for the debit loop."""

    levels: tuple[ChainLevel, ...]
    key: str
    reserved: list[int]  # micro-units held per level (-1: the level holds no reservation)

    @classmethod
    async def load(cls, live: LiveState, levels: tuple[ChainLevel, ...], key: str) -> ChainHold:
        """What each level holds for the call now (from Redis)."""
        snaps = await asyncio.gather(*(live.snapshot(level.account_id) for level in levels))
        reserved = [-1 if s is None or key not in s.calls else s.calls[key] for s in snaps]
        return cls(levels, key, reserved)

    async def extend_to(self, live: LiveState, seconds: int) -> int | None:
        """Extend every level to pay for ``seconds``; the seconds all of them cover.

        None when no level holds a reservation (nothing limits the call here).
        """
        tracked = [i for i, held in enumerate(self.reserved) if held >= 0]
        if not tracked:
            return None

        async def extend(index: int) -> int:
            level = self.levels[index]
            needed = to_micros(call_cost(level.info, level.rate, Decimal(seconds)))
            if needed > self.reserved[index]:
                result = await live.extend(
                    level.account_id, self.key, needed - self.reserved[index]
                )
                if result.reason != "UNKNOWN_CALL":  # a partial grant still counts
                    self.reserved[index] = result.reserved_micros
            return max_usage(level.info, level.rate, from_micros(self.reserved[index]))

        return min(await asyncio.gather(*(extend(i) for i in tracked)))


async def settle_chain(live: LiveState, record: RatedCallRecord, key: str, *, is_new: bool) -> None:
    """Settle (new call) or release (duplicate) every reseller level of a rated call.

    A reseller's hot balance gets ``-wholesale`` (settle, once per call) and ``+retail
    sold`` (credit, once per ledger entry key), as its ledger entries do.
    """
    if not record.chain:
        return
    if not is_new:
        await asyncio.gather(*(live.release(c.account_id, key) for c in record.chain))
        return
    txn = f"call:{record.switch_id}:{record.call_id}"
    sold = [record.cost_micros, *(c.cost_micros for c in record.chain)]
    await asyncio.gather(
        *(live.settle(c.account_id, key, c.cost_micros) for c in record.chain),
        *(
            live.credit(c.account_id, sold[i], f"{txn}:sold:{c.level}")
            for i, c in enumerate(record.chain)
            if sold[i] > 0
        ),
    )
