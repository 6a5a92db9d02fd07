"""The one authorization service behind FastAGI, HTTP and every other front end.

authorize = find the account -> price the destination -> ONE atomic Redis script that
checks status, concurrency and credit and reserves the first slice -> max_usage from the
credit the call can use. An account under a reseller chain is priced at every level and
reserves on every account of the chain, max_usage the shortest (``daemon.reseller_chain``).
The rate is the one in force now (the call's start) in the account's time zone; the
price of an allowed call is kept for the session manager
(:meth:`AuthorizationService.priced_call`). Denials carry a stable ``Reason``; nothing
here raises for a business denial. The reservation key is ``<switch_id>:<call_id>``;
the session manager finds it again when the switch reports the call.

Plans (``balance.usage``, ``balance.bundles``): after LCR, an account with a volume tier
plan gets the tier schedule of its usage this month, and a call covered by one of its
bundles first holds bundled seconds (one slice, as a lease), then reserves only the
money the rest of the slice costs. Both apply to the customer's retail price only. An
account without plans never reaches them: no extra Redis round trip, no SQL.

The common call (an account in the directory's cache, no reseller chain, no plans, no
capped trunk) needs no I/O before its one ``reserve``: ``admit`` runs its checks and
``decide_soon`` decides it from the callback of the Redis reply, without a task, for the
switches' HTTP hot path; ``authorize`` takes the same steps awaiting the reply. The first
slice's cost, reservation and allowance are ``daemon.first_slice``'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import structlog

from balance.accounts import Account
from balance.bundles import BundleCover, BundleGrant, BundleService
from balance.capped_reserve import CappedReserve
from balance.caps import CapAdmission, CapScope, SharedCaps
from balance.live import LiveState, Reservation
from balance.usage import TierService
from daemon.account_directory import AccountDirectory
from daemon.authorization import (
    AuthorizationDecision,
    AuthorizationRequest,
    DecisionListener,
    Reason,
)
from daemon.caps_policy import CapsPolicy, trial_denies
from daemon.first_slice import LIVE_REASONS, FirstSlice
from daemon.lcr_service import RouteSelector
from daemon.metrics import Metrics
from daemon.reseller_chain import ResellerChains
from daemon.tariff_catalog import PricedDestination, TariffCatalog
from tariffs.bundles import CallTerms, bundle_seconds_for, terms_cost
from tariffs.deck import Rate
from tariffs.money import to_micros

log = structlog.get_logger(__name__)

def _now() -> datetime:
    return datetime.now(UTC)


_MAX_CHAIN_DEPTH = 32  # as balance.accounts: a reseller chain is never deeper

PRICED_CALLS_KEPT = 100_000
"""How many authorized calls' prices are remembered until their answer (oldest dropped)."""


def reservation_key(switch_id: str, call_id: str) -> str:
    """The Redis reservation key of one call on one switch."""
    return f"{switch_id}:{call_id}"


@dataclass(slots=True)
class PlainCall:
    """A call on the common path once every check without I/O passed (``admit``): the
    one ``reserve`` of its first slice is all that is left."""

    request: AuthorizationRequest
    key: str  # the reservation key (``reservation_key``)
    priced: PricedDestination  # with its route selection, if any
    first_slice: int  # micro-units
    first_increment: int  # micro-units


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
        routes: RouteSelector | None = None,
        *,
        tiers: TierService | None = None,
        bundles: BundleService | None = None,
        caps: SharedCaps | None = None,
        caps_policy: CapsPolicy | None = None,
    ) -> None:
        self._accounts = accounts
        self._caps = caps
        self._capped = None if caps is None else CappedReserve(live, caps)
        self._caps_policy = caps_policy or CapsPolicy()
        self._reseller_cache: dict[str, tuple[CapScope, ...]] = {}
        self._scopes_generation = -1
        self._trunk_cache: dict[tuple[str, ...], tuple[CapScope, ...]] = {}
        self._trunks_generation = -1
        self._tiers = tiers
        self._bundles = bundles
        self._catalog = catalog
        self._live = live
        self._policy = policy
        self._routes = routes
        self._chains = ResellerChains(
            accounts,
            catalog,
            live,
            debit_interval=policy.debit_interval,
            max_call_duration=policy.max_call_duration,
        )
        self._slices = FirstSlice(
            live, debit_interval=policy.debit_interval, max_call_duration=policy.max_call_duration
        )
        # oldest first; an OrderedDict drops its oldest in O(1), where a dict's
        # ``next(iter())`` skips every slot deleted before it (~27 us at 100,000)
        self._priced_calls: OrderedDict[str, PricedDestination] = OrderedDict()
        self._shared_calls: OrderedDict[str, None] = OrderedDict()  # holding shared slots
        self._finishing: set[asyncio.Task[None]] = set()  # decide_soon's follow-ups
        self.accepting = True
        self.metrics: Metrics | None = None  # set by the daemon: answers counted by reason
        # set by the daemon: denials published as events (never raises)
        self.on_denial: Callable[[AuthorizationRequest, AuthorizationDecision], None] | None = None

    @property
    def caps_policy(self) -> CapsPolicy:
        """The trial and suspension policy in force."""
        return self._caps_policy

    @caps_policy.setter
    def caps_policy(self, policy: CapsPolicy) -> None:
        self._caps_policy = policy

    @property
    def policy(self) -> AuthorizationPolicy:
        """The policy in force."""
        return self._policy

    @property
    def catalog(self) -> TariffCatalog:
        """The tariff catalog calls are priced from (``reload`` it after a deck import)."""
        return self._catalog

    async def price(
        self, account_id: str, callee: str, at: datetime | None = None
    ) -> PricedDestination | None:
        """The retail price of a call of ``account_id`` to ``callee`` (None: no rate).

        ``at`` is the call's start (None: now); bands are read in the account's time zone.
        """
        account = await self._accounts.get(account_id)
        if account is None:
            return None
        priced = self._price(account, callee, at)
        if priced is not None and account.parent_id is not None:
            # the reseller chain's wholesale prices (retail only when a reseller lost its rate)
            priced = await self._chains.attach(account, callee, priced, at) or priced
        plan = None if self._tiers is None else self._tiers.plan_for(account.id)
        if priced is not None and plan is not None and self._tiers is not None:
            # a call nobody authorized holds no bundle; its tier is that of its start
            usage = await self._tiers.usage_at(account.id, at or _now(), account.timezone)
            priced = dataclasses.replace(priced, terms=CallTerms.of(plan, usage))
        return priced

    @property
    def caps(self) -> SharedCaps | None:
        """The shared caps (resellers', trunks'); None when not wired."""
        return self._caps

    @property
    def bundles(self) -> BundleService | None:
        """The bundled-minutes service (None: bundles are not wired)."""
        return self._bundles

    async def timezone(self, account_id: str) -> str:
        """The account's time zone (its plan periods are months there); UTC when unknown."""
        account = await self._accounts.get(account_id) if account_id else None
        return account.timezone if account is not None else "UTC"

    def _price(
        self, account: Account, callee: str, at: datetime | None
    ) -> PricedDestination | None:
        deck = account.rate_deck or self._policy.default_rate_deck
        try:
            return self._catalog.price(deck, callee, at, account.timezone)
        except ValueError as exc:  # an unknown time zone: priced as if in UTC
            log.warning("bad account time zone", account=account.id, error=str(exc))
            return self._catalog.price(deck, callee, at)

    def priced_call(self, key: str) -> PricedDestination | None:
        """The price a call was authorized with (by reservation key), taken once.

        The session manager takes it on answer, so an answered call keeps the price of
        its authorization even when its deck is replaced while it rings. Only the last
        :data:`PRICED_CALLS_KEPT` authorizations of this process are remembered.
        """
        return self._priced_calls.pop(key, None)

    async def currency(self, account_id: str) -> str:
        """The account's currency; ``XXX`` (ISO 4217: no currency) for an unknown account."""
        account = await self._accounts.get(account_id) if account_id else None
        return account.currency if account is not None else "XXX"

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationDecision:
        """Decide on one call and reserve its first slice of credit (counted by reason)."""
        started = time.perf_counter()
        admitted = self.admit(request)
        if isinstance(admitted, PlainCall):
            result = await self._live.reserve(request.account, admitted.key, admitted.first_slice)
            decision = await self._concluded(admitted, result)
        elif admitted is None:
            decision = await self._authorize(request)
        else:
            decision = admitted
        self._count(request, decision, started)
        return decision

    def decide_soon(self, request: AuthorizationRequest, listener: DecisionListener) -> bool:
        """Decide on ``request`` without a task when its call takes the common path
        (``admit``): ``listener.decided`` is called once from a callback of the loop
        (``listener.failed`` with what ``authorize`` would raise), and the decision is
        counted as ``authorize`` counts it. False, with nothing done: ``authorize`` is
        the way. The switches' hot path: no task, no coroutine, one future per call."""
        started = time.perf_counter()
        admitted = self.admit(request)
        if admitted is None:
            return False
        if isinstance(admitted, AuthorizationDecision):
            self._count(request, admitted, started)
            asyncio.get_running_loop().call_soon(listener.decided, admitted)
            return True
        pending = self._live.reserve_soon(request.account, admitted.key, admitted.first_slice)
        if pending is None:  # scripts not run in batches
            return False
        pending.add_done_callback(partial(self._on_reserved, admitted, started, listener))
        return True

    def _on_reserved(
        self,
        call: PlainCall,
        started: float,
        listener: DecisionListener,
        pending: asyncio.Future[object],
    ) -> None:
        try:
            result = self._live.reservation_of(call.request.account, pending)
            decision = self._slices.decision_for(
                result, call.priced, call.first_increment, call.priced.terms
            )
        except (Exception, asyncio.CancelledError) as exc:
            listener.failed(exc)
            return
        if decision is None:  # a shorter call, or none: more Redis work, in a task
            # (``_concluded`` finds the same None again, then does that work)
            task = asyncio.get_running_loop().create_task(
                self._finish_later(call, result, started, listener)
            )
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            return
        decision = self._kept(call.key, call.priced, decision)
        self._count(call.request, decision, started)
        listener.decided(decision)

    async def _finish_later(
        self, call: PlainCall, result: Reservation, started: float, listener: DecisionListener
    ) -> None:
        try:
            decision = await self._concluded(call, result)
        except asyncio.CancelledError as exc:
            listener.failed(exc)
            raise
        except Exception as exc:
            listener.failed(exc)
            return
        self._count(call.request, decision, started)
        listener.decided(decision)

    def _count(
        self, request: AuthorizationRequest, decision: AuthorizationDecision, started: float
    ) -> None:
        if self.metrics is not None:
            self.metrics.count_authorization(decision, time.perf_counter() - started)
        if not decision.allowed and self.on_denial is not None:
            self.on_denial(request, decision)

    def admit(self, request: AuthorizationRequest) -> AuthorizationDecision | PlainCall | None:
        """What ``request`` comes to by the checks that need no I/O, on the common path:
        a denial decided already, or the one ``reserve`` left to make (``PlainCall``).
        None when the call takes the whole way of ``_authorize``: an account not cached
        yet, a reseller chain, tiers or bundles, shared caps that may apply (a capped
        trunk anywhere). Decides as that way does (the same helpers); nothing is
        reserved or counted here."""
        if not self.accepting:
            return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE)
        if not request.account or not request.callee:
            return AuthorizationDecision.deny(Reason.BAD_REQUEST)
        account = self._accounts.cached(request.account)
        if account is None or account.parent_id is not None or self._holds_plans(account):
            return None
        routes = self._routes
        if self._caps is not None and (
            self._cached_reseller_scopes(account) != ()
            or (routes is not None and routes.any_capped)
        ):
            return None  # shared caps may apply: decided before any route is ranked
        if trial_denies(account, request.callee, self._caps_policy):
            return AuthorizationDecision.deny(Reason.TRIAL_RESTRICTED)
        priced = self._price(account, request.callee, None)
        if priced is None:
            return AuthorizationDecision.deny(Reason.NO_RATE)
        if routes is not None:
            routed = self._routed(account, request.callee, priced, _now())
            if isinstance(routed, AuthorizationDecision):
                return routed
            priced = routed
        first_slice, first_increment, _ = self._slices.figures(priced.info, priced.rate)
        key = reservation_key(request.switch_id, request.call_id)
        return PlainCall(request, key, priced, first_slice, first_increment)

    async def _concluded(self, call: PlainCall, result: Reservation) -> AuthorizationDecision:
        """The decision on a ``PlainCall`` from its first ``reserve``'s result."""
        priced = call.priced
        decision = self._slices.decision_for(result, priced, call.first_increment, priced.terms)
        if decision is None:  # a shorter call, or a reservation to give back
            decision = await self._slices.reserve_rest(
                call.request.account, call.key, result, priced, priced.terms, None
            )
        return self._kept(call.key, priced, decision)

    async def _authorize(self, request: AuthorizationRequest) -> AuthorizationDecision:
        if not self.accepting:
            return AuthorizationDecision.deny(Reason.SERVICE_UNAVAILABLE)
        if not request.account or not request.callee:
            return AuthorizationDecision.deny(Reason.BAD_REQUEST)
        account = self._accounts.cached(request.account) or await self._accounts.get(
            request.account
        )
        if account is None:
            return AuthorizationDecision.deny(Reason.UNKNOWN_ACCOUNT)
        # Status and the trial window are checked by the reservation in Redis, which an
        # operator's change reaches at once; the cached account may be a moment old.
        if trial_denies(account, request.callee, self._caps_policy):
            return AuthorizationDecision.deny(Reason.TRIAL_RESTRICTED)
        priced = self._price(account, request.callee, None)
        if priced is not None and account.parent_id is not None:
            priced = await self._chains.attach(account, request.callee, priced, None)
        if priced is None:
            return AuthorizationDecision.deny(Reason.NO_RATE)
        now = _now()
        if self._routes is not None:
            routed = self._routed(account, request.callee, priced, now)
            if isinstance(routed, AuthorizationDecision):
                return routed
            priced = routed
        priced = await self._with_plans(account, request.callee, priced, now)
        key = reservation_key(request.switch_id, request.call_id)
        shared = await self._shared_scopes(account, priced)
        if shared is not None and priced.reserves_plainly:
            # resellers' and trunks' caps and the account's reserve: one script call
            decision, priced = await self._reserve_capped(request.account, key, priced, shared)
        else:
            if shared is not None:  # resellers' and trunks' caps: one script, before money
                admission = await self._admit_shared(key, shared, priced)
                if isinstance(admission, AuthorizationDecision):
                    return admission
                priced = admission
            if priced.chain:  # every account of the reseller chain reserves
                decision, priced = await self._reserve_chain(request, priced)
            else:
                decision, priced = await self._reserve(request, priced)
            if shared is not None and not decision.allowed and self._caps is not None:
                await self._caps.release(key, refund=True)
        return self._kept(key, priced, decision)

    def _routed(
        self, account: Account, callee: str, priced: PricedDestination, now: datetime
    ) -> PricedDestination | AuthorizationDecision:
        """``priced`` with its LCR route selection, or the selection's denial.

        LCR before Redis: a MARGIN_GUARD denial reserves nothing. The margin is the
        platform's: under a reseller chain the platform sells at the top level's
        wholesale price, not at the customer's retail one.
        """
        assert self._routes is not None
        top = priced.chain[-1] if priced.chain else None
        platform_sell = priced if top is None else PricedDestination(info=top.info, rate=top.rate)
        selection = self._routes.select(account.id, callee, platform_sell, now)
        if selection.denied is not None:
            return AuthorizationDecision.deny(selection.denied)
        if selection.ranked:  # no carrier for the number: nothing to keep
            return priced.with_selection(selection)
        return priced

    def _kept(
        self, key: str, priced: PricedDestination, decision: AuthorizationDecision
    ) -> AuthorizationDecision:
        """An allowed call's price remembered (``priced_call``), its routes attached."""
        if decision.allowed:
            self._remember(key, priced)
            if priced.selection is not None and priced.selection.routes:
                return decision.with_routes(priced.selection.routes)
        return decision

    def _holds_plans(self, account: Account) -> bool:
        """Whether the account has a tier schedule or holds bundles (``_with_plans``)."""
        return (self._tiers is not None and self._tiers.plan_for(account.id) is not None) or (
            self._bundles is not None and self._bundles.holds_bundles(account.id)
        )

    async def _with_plans(
        self, account: Account, callee: str, priced: PricedDestination, now: datetime
    ) -> PricedDestination:
        """``priced`` with the account's tier schedule and covering bundle, if it has any."""
        plan = None if self._tiers is None else self._tiers.plan_for(account.id)
        bundles = self._bundles
        if bundles is not None and not bundles.holds_bundles(account.id):
            bundles = None  # nothing can cover the call
        if plan is None and bundles is None:
            return priced
        tz = account.timezone
        try:
            cover = None if bundles is None else bundles.cover(account.id, callee, now, tz)
            if plan is None and cover is None:
                return priced
            usage = None
            if plan is not None and self._tiers is not None:
                usage = await self._tiers.usage_at(account.id, now, tz)
        except ValueError as exc:  # an unknown time zone: the plan periods of UTC
            log.warning("bad account time zone", account=account.id, error=str(exc))
            return await self._with_plans(dataclasses.replace(account, timezone="UTC"),
                                          callee, priced, now)  # fmt: skip
        terms = CallTerms.of(plan) if usage is None else CallTerms.of(plan, usage)
        return dataclasses.replace(priced, terms=terms, bundle=cover)

    async def _shared_scopes(
        self, account: Account, priced: PricedDestination
    ) -> tuple[tuple[CapScope, ...], tuple[CapScope, ...]] | None:
        """The shared caps a call of ``account`` must pass (None: it has none).

        Required: every reseller above the account that caps its customers. Alternatives:
        the trunks of the route list, in route order, when any of them is capped.
        """
        if self._caps is None:
            return None
        required = self._cached_reseller_scopes(account)  # no coroutine on the hot path
        if required is None:
            required = await self._reseller_scopes(account)
        alternatives = self._trunk_alternatives(priced)
        if not required and not alternatives:
            return None
        return required, alternatives

    def _trunk_alternatives(self, priced: PricedDestination) -> tuple[CapScope, ...]:
        """The trunks of the call's route list, when any of them is capped."""
        selection = priced.selection
        if selection is not None and selection.ranked and self._routes is not None:
            return self._trunk_scopes(tuple(r.carrier for r in selection.ranked))
        return ()

    def _cached_reseller_scopes(self, account: Account) -> tuple[CapScope, ...] | None:
        """The capped resellers above ``account`` as cached (None: not since the last
        account change)."""
        generation = self._accounts.generation
        if self._scopes_generation != generation:
            self._reseller_cache.clear()
            self._scopes_generation = generation
        return self._reseller_cache.get(account.id)

    async def _reseller_scopes(self, account: Account) -> tuple[CapScope, ...]:
        """The capped resellers above ``account``, read from the directory and cached."""
        required: list[CapScope] = []
        parent_id = account.parent_id
        for _ in range(_MAX_CHAIN_DEPTH):
            if parent_id is None:
                break
            parent = await self._accounts.get(parent_id)
            if parent is None:
                break
            if (
                parent.customers_concurrency_limit is not None
                or parent.customers_cps_limit is not None
            ):
                required.append(
                    CapScope(
                        f"reseller:{parent.id}",
                        parent.customers_concurrency_limit,
                        parent.customers_cps_limit,
                    )
                )
            parent_id = parent.parent_id
        self._reseller_cache[account.id] = scopes = tuple(required)
        return scopes

    def _trunk_scopes(self, carriers: tuple[str, ...]) -> tuple[CapScope, ...]:
        """The trunks of a route list as alternatives, when any is capped (cached)."""
        routes = self._routes
        assert routes is not None
        if self._trunks_generation != routes.generation:
            self._trunk_cache.clear()
            self._trunks_generation = routes.generation
        found = self._trunk_cache.get(carriers)
        if found is None:
            trunks = [routes.carrier(carrier) for carrier in carriers]
            found = ()
            if any(t is not None and t.capped for t in trunks):
                found = tuple(
                    CapScope(f"trunk:{carrier}")
                    if t is None
                    else CapScope(f"trunk:{carrier}", t.concurrency_limit, t.cps_limit)
                    for carrier, t in zip(carriers, trunks, strict=True)
                )
            if len(self._trunk_cache) > 10_000:
                self._trunk_cache.clear()
            self._trunk_cache[carriers] = found
        return found

    async def _reserve_capped(
        self,
        account_id: str,
        key: str,
        priced: PricedDestination,
        shared: tuple[tuple[CapScope, ...], tuple[CapScope, ...]],
    ) -> tuple[AuthorizationDecision, PricedDestination]:
        """Shared caps and the first slice in one script (a plainly priced call)."""
        assert self._capped is not None and self._caps is not None
        capped, (required, alternatives) = self._capped, shared
        answers: list[tuple[CapAdmission, Reservation]] = []  # the script's, last one last

        async def reserve(amount: int) -> Reservation:
            answers.append(await capped.reserve(account_id, key, amount, required, alternatives))
            return answers[-1][1]

        first_slice, first_increment, _ = self._slices.figures(priced.info, priced.rate)
        decision = await self._slices.reserve(
            account_id, key, priced, first_slice, first_increment, priced.terms, reserve
        )
        admission, reserved = answers[-1]
        if not admission.ok:
            log.info("shared cap denied", reason=admission.reason, scope=admission.scope)
            return decision, priced
        if not decision.allowed:
            if reserved.ok:  # denied after the script (no usable second): slots back
                await self._caps.release(key, refund=True)
            return decision, priced  # else the script gave them back itself
        return decision, self._admitted(key, admission, priced)

    async def _admit_shared(
        self,
        key: str,
        shared: tuple[tuple[CapScope, ...], tuple[CapScope, ...]],
        priced: PricedDestination,
    ) -> PricedDestination | AuthorizationDecision:
        """Admit the call on its shared scopes; the routes from the trunk that took it."""
        assert self._caps is not None
        required, alternatives = shared
        admission = await self._caps.acquire(key, required, alternatives)
        if not admission.ok:
            log.info("shared cap denied", reason=admission.reason, scope=admission.scope)
            return AuthorizationDecision.deny(LIVE_REASONS[admission.reason])
        return self._admitted(key, admission, priced)

    def _admitted(
        self, key: str, admission: CapAdmission, priced: PricedDestination
    ) -> PricedDestination:
        """Remember the call holds shared slots; its routes from the trunk that took it."""
        calls = self._shared_calls
        calls[key] = None
        if len(calls) > PRICED_CALLS_KEPT:
            calls.popitem(last=False)  # the oldest authorization
        selection = priced.selection
        if admission.taken and selection is not None:  # earlier trunks are full
            return priced.with_selection(selection.starting_at(admission.taken))
        return priced

    def holds_shared_caps(self, key: str) -> bool:
        """Whether the call (by reservation key) was admitted on shared caps; asked once,
        on answer, to hold its slots until its end."""
        return self._shared_calls.pop(key, 0) is None

    def _remember(self, key: str, priced: PricedDestination) -> None:
        calls = self._priced_calls
        calls[key] = priced
        if len(calls) > PRICED_CALLS_KEPT:
            calls.popitem(last=False)  # the oldest authorization

    async def _reserve_chain(
        self, request: AuthorizationRequest, priced: PricedDestination
    ) -> tuple[AuthorizationDecision, PricedDestination]:
        """Every level of the chain reserves; a covered call holds its bundle first.

        The chain reserves the customer's first slice at the plain retail price (a bundle
        or a tier only lowers it): more money held than needed, never less.
        """
        key = reservation_key(request.switch_id, request.call_id)
        cover = priced.bundle
        if cover is not None:
            grant = await self._hold_bundle(request.account, cover, key, priced.rate)
            priced = dataclasses.replace(priced, terms=priced.terms.holding(grant.held_seconds))
        decision = await self._chains.reserve(request.account, key, priced)
        if not decision.allowed and cover is not None:
            await self._release_bundle(request.account, cover, key)
        return decision, priced

    async def _reserve(
        self, request: AuthorizationRequest, priced: PricedDestination
    ) -> tuple[AuthorizationDecision, PricedDestination]:
        key = reservation_key(request.switch_id, request.call_id)
        account_id, cover = request.account, priced.bundle
        if cover is None and priced.terms.plain:  # today's path: no plan, no extra work
            first_slice, first_increment, _ = self._slices.figures(priced.info, priced.rate)
            decision = await self._slices.reserve(
                account_id, key, priced, first_slice, first_increment, priced.terms
            )
            return decision, priced
        terms, reachable = priced.terms, priced.terms
        if cover is not None:
            grant = await self._hold_bundle(account_id, cover, key, priced.rate)
            terms = terms.holding(grant.held_seconds)
            reachable = terms.holding(grant.held_seconds + max(grant.available_seconds, 0))
            priced = dataclasses.replace(priced, terms=terms)
        first_slice = to_micros(
            terms_cost(priced.info, priced.rate, self._policy.debit_interval, terms)
        )
        first_increment = to_micros(terms_cost(priced.info, priced.rate, 1, terms))
        decision = await self._slices.reserve(
            account_id, key, priced, first_slice, first_increment, reachable
        )
        if not decision.allowed and cover is not None:
            await self._release_bundle(account_id, cover, key)
        return decision, priced

    async def _hold_bundle(
        self, account_id: str, cover: BundleCover, key: str, rate: Rate
    ) -> BundleGrant:
        """Hold the first slice's bundled seconds (what is left of them when fewer)."""
        assert self._bundles is not None
        total = bundle_seconds_for(rate, self._policy.debit_interval)
        return await self._bundles.reserve(account_id, cover, key, total)

    async def _release_bundle(self, account_id: str, cover: BundleCover, key: str) -> None:
        if self._bundles is not None:
            await self._bundles.release(account_id, cover, key)
