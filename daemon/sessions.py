"""Call sessions: authorized -> answered -> ended, with the debit loop in between.

The session manager consumes switch-neutral events (in order per call). On answer it
finds the call's reservation (made by the switch's authorization request) or, for a call
nobody authorized, authorizes it on the fly; then every ``debit_interval`` it extends the
reservation by the next slice. When the credit is used up it hangs the call up through
the switch (AMI ``Hangup``, ESL ``uuid_kill``) at the second the reservation stops paying.
On end the call is rated by the pure engine and handed to the settler (SQL, then Redis).

A call keeps ONE price from start to end: the one its authorization used (taken from the
authorizer on answer), else the rate in force at the call's start time; a deck replaced
while the call runs never changes it (the next call gets the new deck).

Plans: a call priced with a bundle (``PricedDestination.bundle``) extends its hold on the
bundle with every slice, before money, until the bundle is used up; the money it needs
is then priced under its terms (tier schedule + bundled seconds held). At the end it is
rated under the same terms and records the bundle and the seconds it used. A call with
plain terms takes exactly the path it took before plans existed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

import structlog

from balance.bundles import BundleService
from balance.live import LiveState
from balance.rated_calls import RatedCallRecord
from connectors.events import CallAnswered, CallEnded, CallStarted, Event
from daemon.authorization import AuthorizationRequest
from daemon.authorization_service import AuthorizationService, reservation_key
from daemon.lcr_service import CarrierCharge
from daemon.reseller_chain import ChainHold, chain_charges
from daemon.settlement import Settlement, Settler
from daemon.tariff_catalog import PricedDestination
from tariffs.bundles import bundle_seconds_for, price_call, terms_cost, terms_max_usage
from tariffs.money import from_micros, to_micros
from tariffs.rating import billable_seconds, call_cost, max_usage

log = structlog.get_logger(__name__)

CUT_CAUSE = 16  # Q.850 normal clearing; the reason is logged and counted
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SwitchControl(Protocol):
    """What the session manager may ask of a switch connector."""

    async def hangup(self, channel: str, cause: int = CUT_CAUSE, reason: str = "") -> None:
        """Hang up one channel; ``reason`` is the daemon's reason code."""
        ...


@dataclass(slots=True)
class CallSession:
    """One live call as the daemon sees it."""

    switch_id: str
    call_id: str
    leg_id: str
    channel: str
    account: str
    caller: str = ""
    callee: str = ""
    state: str = "started"  # started -> answered -> ended
    started_at: Decimal | None = None  # switch clock, epoch seconds
    answered_at: Decimal | None = None
    reservation_key: str = ""
    reserved_micros: int = 0
    priced: PricedDestination | None = None
    answered_clock: float = 0.0
    cut_reason: str = ""
    chain_hold: ChainHold | None = None  # the reseller levels' reservations (if a chain)
    bundle_held: int = 0  # bundled seconds the call holds (its priced bundle's lease)
    bundle_exhausted: bool = False  # the bundle gave less than asked: the rest is money
    renewal_denied: str = ""  # ACCOUNT_SUSPENDED / TRIAL_EXPIRED: the account refused to extend
    debit_task: asyncio.Task[None] | None = field(default=None, repr=False)


_RENEWAL_DENIALS = frozenset({"ACCOUNT_SUSPENDED", "TRIAL_EXPIRED"})


def _moment(epoch: Decimal | None) -> datetime | None:
    """A switch timestamp (epoch seconds) as an aware UTC datetime; None when unknown."""
    if epoch is None or not epoch.is_finite() or epoch <= 0:
        return None
    micros = int((epoch * 1_000_000).to_integral_value())
    return _EPOCH + timedelta(microseconds=micros)


def _us(value: Decimal | None) -> int | None:
    return None if value is None else int((value * 1_000_000).to_integral_value())


class SessionManager:
    """Turns call events into reservations, debit ticks, cuts and settlements."""

    def __init__(
        self,
        *,
        authorizer: AuthorizationService,
        live: LiveState,
        settler: Settler,
        controls: Mapping[str, SwitchControl],
        debit_interval: int,
        authorize_unknown_calls: bool = True,
        clock: Callable[[], float] | None = None,
        bundles: BundleService | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._bundles = bundles
        self._live = live
        self._settler = settler
        self._controls = controls
        self._debit_interval = debit_interval
        self._authorize_unknown = authorize_unknown_calls
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._sessions: dict[tuple[str, str], CallSession] = {}
        self.cuts: list[tuple[str, str, str]] = []  # (switch_id, call_id, reason)
        self.on_cut: Callable[[CallSession, str], None] | None = None  # metrics, events
        # after each debit tick of an answered call (low-balance alerts)
        self.on_debit: Callable[[CallSession], Awaitable[None]] | None = None
        self.on_lag: Callable[[float], None] | None = None  # how late a debit tick ran (s)

    def live_sessions(self) -> list[CallSession]:
        """The calls in progress."""
        return list(self._sessions.values())

    def tracked(self, switch_id: str) -> dict[str, CallSession]:
        """The calls in progress on one switch, by call id."""
        return {s.call_id: s for s in self._sessions.values() if s.switch_id == switch_id}

    async def end_lost(self, switch_id: str, call_id: str, ended_at: Decimal) -> bool:
        """End a tracked call the switch no longer has, billed up to ``ended_at``.

        Used by resync when a call vanished while the switch was unreachable: its end
        events are lost for good, so it is rated from what was known, answered time
        counted up to the moment it was last seen alive. False when not tracked.
        """
        session = self._sessions.get((switch_id, call_id))
        if session is None:
            return False
        answered_at = session.answered_at if session.state == "answered" else None
        started_at = session.started_at if session.started_at is not None else ended_at
        if answered_at is not None and answered_at > ended_at:
            ended_at = answered_at
        billsec = ended_at - answered_at if answered_at is not None else Decimal(0)
        await self.handle(
            CallEnded(
                switch_id=switch_id,
                call_id=call_id,
                leg_id=session.leg_id,
                channel=session.channel,
                account=session.account,
                caller=session.caller,
                callee=session.callee,
                answered=answered_at is not None,
                started_at=min(started_at, ended_at),
                answered_at=answered_at,
                ended_at=ended_at,
                billsec=billsec,
                cause="",
                disposition="ANSWER" if answered_at is not None else "FAILED",
            )
        )
        return True

    async def handle(self, event: Event) -> None:
        """Apply one event; errors are logged with the call id, never raised."""
        if not isinstance(event, CallStarted | CallAnswered | CallEnded):
            return
        with structlog.contextvars.bound_contextvars(call_id=event.call_id, account=event.account):
            try:
                if isinstance(event, CallStarted):
                    self._on_started(event)
                elif isinstance(event, CallAnswered):
                    await self._on_answered(event)
                else:
                    await self._on_ended(event)
            except Exception:
                log.exception("call event failed", event_type=type(event).__name__)

    def _session_for(self, event: CallStarted | CallAnswered | CallEnded) -> CallSession:
        key = (event.switch_id, event.call_id)
        session = self._sessions.get(key)
        if session is None:
            session = CallSession(
                switch_id=event.switch_id,
                call_id=event.call_id,
                leg_id=event.leg_id,
                channel=event.channel,
                account=event.account,
            )
            self._sessions[key] = session
        return session

    def _on_started(self, event: CallStarted) -> None:
        session = self._session_for(event)
        session.caller, session.callee = event.caller, event.callee
        if session.started_at is None:
            session.started_at = event.at
        session.account = event.account or session.account
        session.channel = event.channel or session.channel
        if session.state == "started":  # a resynced call may learn its real A leg later
            session.leg_id = event.leg_id or session.leg_id
        log.info("call started", caller=event.caller, callee=event.callee)

    async def _find_reservation(self, session: CallSession) -> str | None:
        for ref in (session.leg_id, session.call_id):
            key = reservation_key(session.switch_id, ref)
            if ref and await self._live.has_call(session.account, key):
                return key
        return None

    async def _on_answered(self, event: CallAnswered) -> None:
        session = self._session_for(event)
        if session.state != "started":
            return
        session.state = "answered"
        session.answered_clock = self._clock()
        session.answered_at = event.at
        session.account = event.account or session.account
        session.channel = event.channel or session.channel
        if not session.account:
            log.warning("answered call has no account; it is not billed in real time")
            return
        found = await self._find_reservation(session)
        session.priced = await self._price_at_start(session, found)
        priced = session.priced
        if priced is not None and priced.bundle is not None and not priced.terms.bundle_seconds:
            # authorized on money (the bundle was used up then): a money call to its end,
            # even if the bundle gets seconds back meanwhile -- its price stays the one it
            # was authorized with
            session.bundle_exhausted = found is not None
        if found is not None:
            session.reservation_key = found
            session.reserved_micros = await self._reserved(session.account, found)
        elif self._authorize_unknown:
            decision = await self._authorizer.authorize(
                AuthorizationRequest(
                    switch_id=session.switch_id,
                    call_id=session.call_id,
                    account=session.account,
                    caller=session.caller,
                    callee=session.callee,
                )
            )
            if not decision.allowed:
                log.warning("unauthorized call denied on answer", reason=decision.reason.value)
                await self._cut(session, decision.reason.value)
                return
            session.reservation_key = reservation_key(session.switch_id, session.call_id)
            kept = self._authorizer.priced_call(session.reservation_key)  # priced at start above
            if kept is not None and session.priced is not None:  # but its plans as authorized
                session.priced = replace(session.priced, terms=kept.terms, bundle=kept.bundle)
            session.reserved_micros = await self._reserved(session.account, session.reservation_key)
        else:
            return
        if session.priced is not None and session.priced.bundle is not None:
            await self._hold_bundle(session, session.priced, self._debit_interval)
        caps = self._authorizer.caps
        if caps is not None and self._authorizer.holds_shared_caps(session.reservation_key):
            await caps.hold(session.reservation_key)  # a reseller's or trunk's slot: to its end
        if session.priced is not None and session.priced.chain:
            session.chain_hold = await ChainHold.load(
                self._live, session.priced.chain, session.reservation_key
            )
        log.info("call answered", reserved_micros=session.reserved_micros)
        if session.priced is not None:
            session.debit_task = asyncio.create_task(
                self._debit_loop(session), name=f"debit:{session.call_id}"
            )

    async def _price_at_start(
        self, session: CallSession, reservation: str | None
    ) -> PricedDestination | None:
        """The price the call was authorized with, else the rate in force at its start."""
        if reservation is not None:
            kept = self._authorizer.priced_call(reservation)
            if kept is not None:
                return kept
        started = _moment(session.started_at)
        return await self._authorizer.price(session.account, session.callee, started)

    async def _reserved(self, account: str, key: str) -> int:
        return await self._live.reserved(account, key)

    async def _debit_loop(self, session: CallSession) -> None:
        priced = session.priced
        assert priced is not None
        with structlog.contextvars.bound_contextvars(
            call_id=session.call_id, account=session.account
        ):
            try:
                while True:
                    elapsed = self._clock() - session.answered_clock
                    target = math.ceil(elapsed) + self._debit_interval
                    covered = await self._extend_to(session, priced, target)
                    if self.on_debit is not None:
                        try:
                            await self.on_debit(session)
                        except Exception:  # an alert never stops the debit loop
                            log.exception("debit hook failed")
                    if session.renewal_denied == "ACCOUNT_SUSPENDED":
                        await self._cut(session, session.renewal_denied)  # at once
                        return
                    if covered < target:
                        await asyncio.sleep(
                            max(0.0, session.answered_clock + covered - self._clock())
                        )
                        # one last try: a top-up may have arrived meanwhile
                        covered = await self._extend_to(session, priced, covered + 1)
                        if covered <= math.ceil(self._clock() - session.answered_clock):
                            # a trial that ended is not renewed: the call ran out its slice
                            await self._cut(
                                session, session.renewal_denied or "INSUFFICIENT_CREDIT"
                            )
                            return
                        continue
                    due = self._clock() + self._debit_interval
                    await asyncio.sleep(self._debit_interval)
                    if self.on_lag is not None:
                        self.on_lag(self._clock() - due)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("debit loop failed")

    async def _hold_bundle(
        self, session: CallSession, priced: PricedDestination, seconds: int
    ) -> None:
        """Hold the bundled seconds that cover the first ``seconds`` (idempotent)."""
        cover = priced.bundle
        if self._bundles is None or cover is None or session.bundle_exhausted:
            return
        total = bundle_seconds_for(priced.rate, seconds)
        if total <= session.bundle_held and session.bundle_held > 0:
            return
        grant = await self._bundles.reserve(session.account, cover, session.reservation_key, total)
        session.bundle_held = grant.held_seconds
        session.bundle_exhausted = not grant.ok

    async def _extend_to(
        self, session: CallSession, priced: PricedDestination, seconds: int
    ) -> int:
        """Reserve enough for ``seconds`` of talk; return how many seconds are covered."""
        if priced.bundle is not None:  # bundled seconds first, then money for the rest
            await self._hold_bundle(session, priced, seconds)
        terms = priced.terms.holding(session.bundle_held)
        if terms.plain:
            needed = to_micros(call_cost(priced.info, priced.rate, Decimal(seconds)))
        else:
            needed = to_micros(terms_cost(priced.info, priced.rate, seconds, terms))
        if needed > session.reserved_micros:
            result = await self._live.extend(
                session.account, session.reservation_key, needed - session.reserved_micros
            )
            if result.reason != "UNKNOWN_CALL":  # a partial grant still counts
                session.reserved_micros = result.reserved_micros
            if result.reason in _RENEWAL_DENIALS:
                session.renewal_denied = result.reason
        credit = from_micros(session.reserved_micros)
        if terms.plain:
            covered = max_usage(priced.info, priced.rate, credit)
        else:
            covered = terms_max_usage(priced.info, priced.rate, credit, terms)
        if session.chain_hold is not None:  # every reseller level must pay as well
            chain_covered = await session.chain_hold.extend_to(self._live, seconds)
            if chain_covered is not None:
                covered = min(covered, chain_covered)
        return covered

    async def _cut(self, session: CallSession, reason: str) -> None:
        session.cut_reason = reason
        self.cuts.append((session.switch_id, session.call_id, reason))
        if self.on_cut is not None:
            self.on_cut(session, reason)
        control = self._controls.get(session.switch_id)
        log.warning("cutting call", reason=reason, channel=session.channel)
        if control is None:
            log.error("no connector to cut the call", switch_id=session.switch_id)
            return
        await control.hangup(session.channel, CUT_CAUSE, reason)

    async def _on_ended(self, event: CallEnded) -> None:
        session = self._sessions.pop((event.switch_id, event.call_id), None)
        if session is not None and session.debit_task is not None:
            session.debit_task.cancel()
        account = event.account or (session.account if session else "")
        if not account:
            log.warning("ended call has no account; recorded unbilled", callee=event.callee)
        key = (
            session.reservation_key
            if session and session.reservation_key
            else await self._find_ended_reservation(event, account)
        )
        # the price the call started with: the session's, else its authorization's, else
        # the rate in force at its start (a replaced deck never reprices a running call)
        priced = session.priced if session and session.priced else None
        if priced is None and account:
            priced = self._authorizer.priced_call(key) or await self._authorizer.price(
                account, event.callee, _moment(event.started_at)
            )
        currency = await self._authorizer.currency(account) if priced is None else ""
        held = session.bundle_held if session and session.priced else None
        record = self._rate(event, account, priced, currency, held)
        self._settler.submit(
            Settlement(
                record=record,
                reservation_key=key,
                bundle_period=priced.bundle.period if priced and priced.bundle else "",
            )
        )
        log.info(
            "call ended",
            answered=event.answered,
            billsec=str(event.billsec),
            cut=session.cut_reason if session else "",
        )

    async def _find_ended_reservation(self, event: CallEnded, account: str) -> str:
        if account:
            for ref in (event.leg_id, event.call_id):
                key = reservation_key(event.switch_id, ref)
                if ref and await self._live.has_call(account, key):
                    return key
        return reservation_key(event.switch_id, event.call_id)

    @staticmethod
    def _rate(
        event: CallEnded,
        account: str,
        priced: PricedDestination | None,
        currency: str,
        bundle_held: int | None = None,
    ) -> RatedCallRecord:
        """Rate a finished call; ``bundle_held``: its session's bundled seconds (None: the
        seconds its authorization held)."""
        duration = event.billsec if event.answered else Decimal(0)
        charge = CarrierCharge()
        bundle, bundle_seconds, tier_usage = "", 0, None
        if priced is None:
            cost, billable, deck, prefix, dest, rate = 0, 0, "", "", "", 0
        else:
            currency, deck = priced.info.currency, priced.info.name
            prefix, dest = priced.rate.prefix, priced.rate.destination
            held = priced.terms.bundle_seconds if bundle_held is None else bundle_held
            terms = priced.terms.holding(held if priced.bundle is not None else 0)
            if terms.plain:
                cost = to_micros(call_cost(priced.info, priced.rate, duration))
                billable = billable_seconds(priced.rate, duration)
                rate = to_micros(priced.rate.rate)
            else:
                price = price_call(priced.info, priced.rate, duration, terms)
                cost, billable = to_micros(price.cost), price.billable_seconds
                rate = to_micros(terms.start_rate(priced.rate).rate)
                bundle_seconds = price.bundle_seconds
            if priced.bundle is not None and held > 0:  # an unused hold is dropped by name
                bundle = priced.bundle.bundle.name
            # the tier counter's position the terms were computed from (None: no tier plan),
            # so a rerate can price the call at its tier again
            tier_usage = priced.terms.tier_usage if priced.terms.discounts else None
        chain = chain_charges(priced, duration)
        if priced is not None and priced.selection is not None and event.answered:
            # the platform's margin: under a reseller chain it sells at the top level's price
            platform_revenue = chain[-1].cost_micros if chain else cost
            charge = priced.selection.carrier_charge(platform_revenue, duration)
        return RatedCallRecord(
            switch_id=event.switch_id,
            call_id=event.call_id,
            account_id=account,
            caller=event.caller,
            callee=event.callee,
            started_at_us=_us(event.started_at) or 0,
            answered_at_us=_us(event.answered_at),
            ended_at_us=_us(event.ended_at) or 0,
            billsec_us=_us(duration) or 0,
            billable_seconds=billable,
            cost_micros=cost,
            currency=currency,
            deck=deck,
            prefix=prefix,
            destination=dest,
            rate_micros=rate,
            disposition=event.disposition,
            cause=event.cause,
            carrier=charge.carrier,
            buy_cost_micros=charge.buy_cost_micros,
            margin_micros=charge.margin_micros,
            chain=chain,
            bundle=bundle,
            bundle_seconds=bundle_seconds,
            tier_usage=tier_usage,
        )

    async def close(self) -> None:
        """Stop every debit loop (the calls keep their reservations' leases)."""
        tasks = [s.debit_task for s in self._sessions.values() if s.debit_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
