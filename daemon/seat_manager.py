"""The seat manager: agent logins and logoffs against each tenant's seat limit.

It consumes the connectors' ``AgentLoggedIn`` / ``AgentLoggedOut`` events and answers
the switch's pre-login ask (``authorize_agent``, for ``/v1/authorize/agent`` and
FastAGI). Live seats are counted in Redis (``balance.seats.SeatState``, one atomic script
per login), sessions are written to SQL (``balance.seat_sessions.SeatSessions``):

- a login admitted (``OK``) opens a session; a seat already live (``ALREADY``) is not
  counted again (its session is opened only if its switch has none open: idempotent);
- a login past the limit (``SEAT_LIMIT``) is logged as a warning naming the tenant, the
  seat and the limit, written as a zero-length ``refused`` session, logged off through
  the ``logoff(switch_id, seat)`` hook, and notified as ``seat_refused``;
- a logoff drops the seat and closes its session (``logoff``), notified as
  ``seat_logged_out``;
- a seat whose tenant is "" (no rule named it), or whose tenant has no account
  (``seat_limit`` raises ``LookupError``), is recorded in SQL but never refused (a
  warning once per seat / tenant);
- a replayed login of a session already ended is undone in Redis (a stale event).

``restore`` rebuilds the live seats in Redis from the open SQL sessions at start.

``handle`` is an event boundary: it logs errors with the switch, tenant and seat and
never raises; errors of the ``logoff`` and ``notify`` hooks are logged, never raised.
``authorize_agent`` raises the live-state errors (``balance.live``) for its caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import structlog

from balance.seat_sessions import OpenResult, SeatSessions
from balance.seats import SEAT_ALREADY, SEAT_LIMIT, LiveSeat, SeatState
from connectors.events import AgentLoggedIn, AgentLoggedOut, Event

log = structlog.get_logger(__name__)

SeatLimit = Callable[[str], Awaitable[int | None]]
"""The seat limit of a tenant (None: no cap); raises ``LookupError`` for an unknown one."""

Logoff = Callable[[str, str], Awaitable[None]]
"""Log a seat off its switch: ``(switch_id, seat)``."""

Notify = Callable[[str, str, dict[str, object]], None]
"""Publish a seat event: ``(event, tenant, payload)``."""

REASON_OK = "OK"
REASON_UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"


class SeatManager:
    """Applies agent login/logoff events to live seats and seat sessions."""

    def __init__(
        self,
        state: SeatState,
        sessions: SeatSessions,
        *,
        seat_limit: SeatLimit,
        logoff: Logoff,
        notify: Notify | None = None,
    ) -> None:
        self._state = state
        self._sessions = sessions
        self._seat_limit = seat_limit
        self._logoff = logoff
        self._notify = notify
        self._warned: set[tuple[str, str]] = set()  # untracked seats / unknown tenants

    async def handle(self, event: Event) -> None:
        """Apply one event (others are ignored); errors are logged, never raised."""
        if not isinstance(event, AgentLoggedIn | AgentLoggedOut):
            return
        with structlog.contextvars.bound_contextvars(
            switch_id=event.switch_id, tenant=event.tenant, seat=event.agent
        ):
            try:
                if isinstance(event, AgentLoggedIn):
                    await self._on_login(event)
                else:
                    await self._on_logout(event)
            except Exception:
                log.exception("seat event failed", event_type=type(event).__name__)

    async def authorize_agent(self, tenant: str, seat: str) -> tuple[bool, str]:
        """The pre-login ask: hold a seat for ``seat`` if ``tenant`` has room.

        Answers ``(True, "OK")``, ``(False, "SEAT_LIMIT")`` or ``(False,
        "UNKNOWN_ACCOUNT")``; a seat without tenant ("") is never refused.
        """
        if tenant == "":
            return True, REASON_OK
        try:
            limit = await self._seat_limit(tenant)
        except LookupError:
            log.info("agent ask for an unknown tenant", tenant=tenant, seat=seat)
            return False, REASON_UNKNOWN_ACCOUNT
        admission = await self._state.hold(tenant, seat, limit)
        if not admission.ok:
            log.info(
                "agent ask refused: seat limit reached",
                tenant=tenant,
                seat=seat,
                limit=limit,
                live_seats=admission.live_seats,
            )
        return admission.ok, admission.reason

    async def restore(self) -> int:
        """Rebuild every tenant's live seats in Redis from the open SQL sessions.

        A seat open on several switches is one seat (the earliest session's). Tenants
        with no open session keep what Redis holds. Returns the number of live seats.
        """
        tenants: dict[str, dict[str, LiveSeat]] = {}
        for session in await self._sessions.open_sessions():
            if session.tenant == "":
                continue
            seats = tenants.setdefault(session.tenant, {})
            known = seats.get(session.seat)
            if known is None or session.started_at_us < known.since_us:
                seats[session.seat] = LiveSeat(
                    session.seat, session.switch_id, session.started_at_us
                )
        for tenant, seats in tenants.items():
            await self._state.load(tenant, seats.values())
        count = sum(len(seats) for seats in tenants.values())
        log.info("live seats restored", tenants=len(tenants), seats=count)
        return count

    async def _on_login(self, event: AgentLoggedIn) -> None:
        at_us = _epoch_us(event.at)
        tenant, seat, switch_id = event.tenant, event.agent, event.switch_id
        limit = await self._limit_for(tenant, seat)
        if tenant == "" or isinstance(limit, _Untracked):
            await self._sessions.open(tenant, seat, switch_id, at_us, event.name)
            return
        admission = await self._state.login(tenant, seat, switch_id, at_us, limit)
        if admission.reason == SEAT_LIMIT:
            await self._refuse(event, at_us, limit, admission.live_seats)
            return
        opened = await self._sessions.open(tenant, seat, switch_id, at_us, event.name)
        if admission.reason == SEAT_ALREADY:
            return
        if opened is OpenResult.ENDED:
            # a replay of a session already over: the seat is not live
            await self._state.logout(tenant, seat, switch_id=switch_id, at_us=at_us)
            log.info("replayed login of an ended seat session ignored", at_us=at_us)
            return
        log.info("seat logged in", live_seats=admission.live_seats, limit=limit)
        payload: dict[str, object] = {"seat": seat, "switch_id": switch_id, "at_us": at_us}
        payload |= {"name": event.name, "live_seats": admission.live_seats}
        self._publish("seat_logged_in", tenant, payload)

    async def _on_logout(self, event: AgentLoggedOut) -> None:
        at_us = _epoch_us(event.at)
        tenant, seat, switch_id = event.tenant, event.agent, event.switch_id
        was_live = False
        if tenant != "":
            was_live = await self._state.logout(tenant, seat, switch_id=switch_id, at_us=at_us)
        closed = await self._sessions.close(switch_id, seat, at_us, "logoff")
        if not (was_live or closed):
            log.debug("logout of a seat not live", at_us=at_us)
            return
        log.info("seat logged out")
        payload: dict[str, object] = {"seat": seat, "switch_id": switch_id, "at_us": at_us}
        self._publish("seat_logged_out", tenant, payload)

    async def _refuse(self, event: AgentLoggedIn, at_us: int, limit: int, live: int) -> None:
        tenant, seat, switch_id = event.tenant, event.agent, event.switch_id
        log.warning(
            "seat refused: seat limit reached, logging it off",
            tenant=tenant,
            seat=seat,
            limit=limit,
            live_seats=live,
        )
        await self._sessions.refused(tenant, seat, switch_id, at_us, event.name)
        try:
            await self._logoff(switch_id, seat)
        except Exception:
            log.exception("logoff of a refused seat failed", tenant=tenant, seat=seat)
        payload: dict[str, object] = {"seat": seat, "switch_id": switch_id, "at_us": at_us}
        payload |= {"name": event.name, "limit": limit, "live_seats": live}
        self._publish("seat_refused", tenant, payload)

    async def _limit_for(self, tenant: str, seat: str) -> int | _Untracked:
        """The tenant's seat limit (-1: none), or ``_Untracked`` (warned once)."""
        if tenant == "":
            self._warn_once(("", seat), "seat without tenant: recorded, never refused")
            return _UNTRACKED
        try:
            limit = await self._seat_limit(tenant)
        except LookupError:
            self._warn_once((tenant, ""), "seat of an unknown tenant: recorded, never refused")
            return _UNTRACKED
        return -1 if limit is None else limit

    def _warn_once(self, key: tuple[str, str], message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _publish(self, name: str, tenant: str, payload: dict[str, object]) -> None:
        if self._notify is None:
            return
        try:
            self._notify(name, tenant, payload)
        except Exception:
            log.exception("seat notification failed", notification=name)


class _Untracked:
    """The limit of a seat recorded in SQL only (no tenant, or an unknown one)."""


_UNTRACKED = _Untracked()


def _epoch_us(at: Decimal) -> int:
    """Decimal epoch seconds -> integer microseconds (rounded half-even, never a float)."""
    return int((at * 1_000_000).to_integral_value())
