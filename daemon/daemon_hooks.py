"""What the daemon does around calls and seats besides billing them: the hooks.

The components report what happened through small callbacks (a cut, a denial, a debit
tick, a rated call, a seat refused); ``DaemonHooks`` turns them into metrics, events out
(``daemon.notifications``), low-balance checks, postpaid suspensions and seat logoffs.
Every hook is cheap when nothing listens (no notifier: metrics only) and never raises
into the component that called it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from balance.denials import DenialCounter
from balance.rated_calls import RatedCallRecord
from balance.thresholds import ThresholdRule
from connectors.events import AgentLoggedIn, AgentLoggedOut, Event
from daemon import notifications
from daemon.account_admin import AccountAdmin
from daemon.account_directory import AccountDirectory
from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason
from daemon.connector_types import EventHandler
from daemon.metrics import Metrics
from daemon.notifications import Notifier
from daemon.seat_manager import SeatManager
from daemon.sessions import CallSession, SessionManager
from daemon.switches import SwitchConnector
from daemon.threshold_alerts import ThresholdAlerts
from tariffs.money import to_micros

log = structlog.get_logger(__name__)

_SEAT_STATES = {"seat_logged_in": "logged_in", "seat_logged_out": "logged_out"}


class DaemonHooks:
    """Metrics, events out, alerts, suspensions and logoffs of one daemon."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        notifier: Notifier,
        directory: AccountDirectory,
        admin: AccountAdmin,
        thresholds: ThresholdAlerts,
        connectors: Callable[[], Sequence[SwitchConnector]],
        logoff_seats: bool,
    ) -> None:
        self._metrics = metrics
        self._notifier = notifier
        self._directory = directory
        self._admin = admin
        self._thresholds = thresholds
        self._connectors = connectors
        self._logoff_seats = logoff_seats
        self._trials_announced: set[str] = set()
        self._side_tasks: set[asyncio.Task[None]] = set()

    def reconfigure(self, *, logoff_seats: bool, thresholds: Sequence[ThresholdRule]) -> None:
        """A configuration reload: the seat policy and the default low-balance rules."""
        self._logoff_seats = logoff_seats
        self._thresholds.defaults = tuple(thresholds)

    @property
    def publishing(self) -> bool:
        """Whether events go out (MQTT or webhook configured)."""
        return self._notifier.enabled

    async def aclose(self) -> None:
        """Cancel the seat logoffs still in flight."""
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    @staticmethod
    def dispatcher(sessions: SessionManager, seats: SeatManager) -> EventHandler:
        """Seat events to the seat manager, everything else to the session manager."""

        async def dispatch(event: Event) -> None:
            if isinstance(event, AgentLoggedIn | AgentLoggedOut):
                await seats.handle(event)
            else:
                await sessions.handle(event)

        return dispatch

    def on_cut(self, session: CallSession, reason: str) -> None:
        """A live call was cut: counted by reason, published."""
        self._metrics.count_cut(reason)
        if not self._notifier.enabled:
            return
        talked = 0.0 if not session.answered_clock else time.monotonic() - session.answered_clock
        self._notifier.publish(
            notifications.call_cut(
                session.account,
                switch_id=session.switch_id,
                call_id=session.call_id,
                reason=reason,
                seconds=max(0, int(talked)),
            )
        )
        if reason == "TRIAL_EXPIRED":
            self._trial_over(session.account)

    def denial_recorder(
        self, denials: DenialCounter
    ) -> Callable[[AuthorizationRequest, AuthorizationDecision], None]:
        """The authorization service's denial hook: counted per account and day by reason
        (``/v1/accounts/{id}/denials``), published when events go out. An unknown
        accountcode is not counted (a switch could create keys at will)."""
        publishing = self._notifier.enabled

        def on_denial(request: AuthorizationRequest, decision: AuthorizationDecision) -> None:
            if decision.reason is not Reason.UNKNOWN_ACCOUNT and request.account:
                denials.schedule(request.account, decision.reason.value)
            if publishing:
                self.on_denial(request, decision)

        return on_denial

    def on_denial(self, request: AuthorizationRequest, decision: AuthorizationDecision) -> None:
        """A denied authorization, published (and a trial's end, once)."""
        reason = decision.reason.value
        self._notifier.publish(
            notifications.denial(
                request.account,
                switch_id=request.switch_id,
                call_id=request.call_id,
                caller=request.caller,
                callee=request.callee,
                reason=reason,
            )
        )
        if reason == "TRIAL_EXPIRED":
            self._trial_over(request.account)

    def _trial_over(self, account_id: str) -> None:
        """Publish an account's trial expiry once per process."""
        if account_id in self._trials_announced:
            return
        self._trials_announced.add(account_id)
        cached = self._directory.cached(account_id)
        ended = cached.trial_ends_at if cached is not None else None
        self._notifier.publish(
            notifications.trial_expired(
                account_id, plan="trial", trial_ended_at=ended or datetime.now(UTC)
            )
        )

    async def on_debit(self, session: CallSession) -> None:
        """After a debit tick: low-balance thresholds at the call's rate."""
        if session.priced is not None:
            await self._thresholds.check(session.account, to_micros(session.priced.rate.rate))

    async def after_settle(self, record: RatedCallRecord, is_new: bool) -> None:
        """A call was rated: published, low-balance thresholds checked, and a postpaid
        account at its credit limit suspended."""
        if not is_new:
            return
        if self._notifier.enabled:
            self._notifier.publish(notifications.call_rated(record))
            await self._thresholds.check(record.account_id, record.rate_micros or None)
        account = await self._directory.get(record.account_id)
        if account is None or account.billing != "postpaid":
            return
        suspended = await self._admin.check_postpaid(record.account_id)
        if suspended is not None:
            log.warning("postpaid account suspended at its credit limit", account=suspended.id)
            self._directory.put(suspended)
            self.notify(
                "account_suspended",
                suspended.id,
                {"reason": suspended.status_reason, "call_id": record.call_id},
            )

    async def logoff_seat(self, switch_id: str, seat: str) -> None:
        """Log a seat past its tenant's limit off its switch (``seats.over_limit``).

        The command goes out in a task of its own: the event stream that reported the
        login never waits for the switch's answer.
        """
        if not self._logoff_seats:
            return
        connector = next((c for c in self._connectors() if c.switch_id == switch_id), None)
        if connector is None:
            log.error("no connector to log the seat off", switch_id=switch_id, seat=seat)
            return
        task = asyncio.create_task(connector.logoff_seat(seat), name=f"seat-logoff:{seat}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def notify(self, kind: str, tenant: str, payload: dict[str, object]) -> None:
        """An event of a component (seats, suspensions) for metrics and the notifier."""
        if kind == "seat_refused":
            self._metrics.seat_refusals.labels(tenant or "-").inc()
        notifier = self._notifier
        if not notifier.enabled:
            return
        if kind.startswith("seat_"):
            limit = payload.get("limit")
            notifier.publish(
                notifications.seat(
                    tenant,
                    switch_id=str(payload.get("switch_id", "")),
                    agent=str(payload.get("seat", "")),
                    state=_SEAT_STATES.get(kind, "refused"),
                    seats_in_use=int(str(payload.get("live_seats", 0))),
                    seat_limit=int(str(limit)) if limit is not None and limit != -1 else None,
                )
            )
        elif kind == "account_suspended":
            reason = str(payload.get("reason", ""))
            notifier.publish(notifications.account_suspended(tenant, reason=reason))
