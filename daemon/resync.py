"""Resync on (re)connect: reconcile a switch's live calls with the calls the daemon tracks.

Events are lost while a switch is unreachable (and a restarted daemon knows no calls), so
on every successful connection each connector lists its switch's live calls
(``CoreShowChannels``, ``show channels as json``) before it delivers the new connection's
events, and hands the listing to :func:`reconcile`:

* a call the daemon tracks that the switch no longer has ended while nobody listened:
  its translator forgets it and it is rated from what was known, answered time counted
  up to ``lost_at``, the moment the switch was last seen alive (the disconnect);
* a call the switch has that the daemon does not track (it started while disconnected,
  or before a daemon restart) is adopted (per switch policy ``untracked_calls``): the
  translator tracks it from now on and the session manager gets its CallStarted /
  CallAnswered, so it is authorized on the fly (or finds its reservation) and debited;
  with policy ``cut`` it is hung up instead (still tracked, so what it used is rated).
  Calls without an account are left alone.

Every ended, adopted or cut call is logged; the counts are returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

import structlog

from connectors.events import CallStarted, Event
from connectors.live_calls import LiveCall
from daemon.sessions import SessionManager

log = structlog.get_logger(__name__)

UntrackedPolicy = Literal["adopt", "cut"]
RESYNC_CUT_CAUSE = 16


class ResyncTarget(Protocol):
    """What reconciliation needs of a connector's translator and switch."""

    def tracked_calls(self) -> list[str]:
        """Call ids the translator is following."""
        ...

    def forget(self, call_id: str) -> None:
        """Stop following a call (its end events will never come)."""
        ...

    def adopt(self, call: LiveCall) -> list[Event]:
        """Start following a live call; the events that announce it."""
        ...

    async def hangup(
        self, channel: str, cause: int = RESYNC_CUT_CAUSE, reason: str = ""
    ) -> None:
        """Hang a channel up."""
        ...


@dataclass(slots=True)
class ResyncReport:
    """What one reconciliation did, by call id."""

    ended: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)


async def reconcile(
    switch_id: str,
    listing: Sequence[LiveCall],
    *,
    sessions: SessionManager,
    target: ResyncTarget,
    deliver: Callable[[Event], Awaitable[None]],
    policy: UntrackedPolicy,
    lost_at: Decimal,
    candidates: Set[str] | None = None,
) -> ResyncReport:
    """Reconcile ``listing`` (the switch's live calls) with what is tracked.

    Run it at the listing's place in the event stream (after every event received
    before the listing). ``candidates`` are the calls tracked when the listing was
    requested: only they can have vanished (a call first seen after the request is
    newer than the listing); ``None`` means every tracked call.
    """
    report = ResyncReport()
    live = {call.call_id: call for call in listing}
    sessions_tracked = sessions.tracked(switch_id)
    translator_tracked = set(target.tracked_calls())
    eligible = (translator_tracked | sessions_tracked.keys()) - live.keys()
    if candidates is not None:
        eligible &= candidates
    for call_id in eligible & translator_tracked:
        target.forget(call_id)
    for call_id in sorted(eligible & sessions_tracked.keys()):
        target.forget(call_id)
        if await sessions.end_lost(switch_id, call_id, lost_at):
            report.ended.append(call_id)
            log.warning(
                "call vanished while the switch was unreachable; billed up to the disconnect",
                switch_id=switch_id,
                call_id=call_id,
                lost_at=str(lost_at),
            )
    known = translator_tracked | sessions_tracked.keys()
    for call in listing:
        if call.call_id in known or not call.account:
            continue
        events = target.adopt(call)
        if not events:  # ended meanwhile, or already known to the translator
            continue
        if policy == "cut":
            # tracked by the translator (so its end is still rated), not debited
            for event in events:
                if isinstance(event, CallStarted):
                    await deliver(event)
            log.warning(
                "untracked live call cut on resync",
                switch_id=switch_id,
                call_id=call.call_id,
                account=call.account,
                channel=call.channel,
            )
            await target.hangup(call.channel, RESYNC_CUT_CAUSE, "UNTRACKED_CALL")
            report.cut.append(call.call_id)
            continue
        for event in events:
            await deliver(event)
        report.adopted.append(call.call_id)
        log.warning(
            "untracked live call adopted on resync",
            switch_id=switch_id,
            call_id=call.call_id,
            account=call.account,
            answered=call.answered,
        )
    log.info(
        "switch resynced",
        switch_id=switch_id,
        live_calls=len(listing),
        ended=len(report.ended),
        adopted=len(report.adopted),
        cut=len(report.cut),
    )
    return report
