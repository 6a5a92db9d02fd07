"""Translate FreeSWITCH ESL events into switch-neutral call events (connectors/events.py).

A FreeSWITCH call is several channels (loopback A and B, bridged SIP legs, callcenter
agent legs); it is billed once, on its *billing leg* (``connectors.esl.legs``): never a
loopback B-leg nor a leg originated on behalf of another channel. Only billing legs that
carry ``variable_accountcode`` are calls; every other channel is ignored (far-end SIP
legs and callcenter agent legs carry none). ``call_id``, ``leg_id`` and ``channel`` are
all the billing leg's Unique-ID (what ``uuid_kill`` takes).

* ``CallStarted`` on the first event of the billing leg that carries an accountcode
  (its CHANNEL_CREATE, or whatever comes first with a selective subscription); ``at`` is
  ``Caller-Channel-Created-Time``.
* ``CallAnswered`` on the first of its events whose ``Caller-Channel-Answered-Time`` is
  not 0 (its CHANNEL_ANSWER); ``at`` is that time.
* ``CallEnded`` exactly once, from the billing leg's CHANNEL_HANGUP_COMPLETE (or its
  CHANNEL_DESTROY, which carries the same CDR variables in ALL mode, whichever comes
  first) with the facts of ``connectors.esl.cdr``; or, when only its CHANNEL_HANGUP came
  (connection lost), from :meth:`ESLTranslator.expire` ``grace`` seconds later.

Every time is exact ``Decimal`` seconds from the µs text the switch sent. Events may come
out of ``Event-Sequence`` order: an event of an unknown billing leg starts its call
whatever its name, and a CHANNEL_UUID moves a call to its new Unique-ID. A bounded set of
finished call ids keeps late events (CHANNEL_DESTROY, a stray CHANNEL_ANSWER) from
resurrecting a call. The translator raises no errors: events it cannot place are ignored.
"""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal

from connectors.esl import cdr
from connectors.esl.legs import billing_leg_uuid, is_loopback_b_leg, is_originated_for_another
from connectors.esl.parser import ESLEvent
from connectors.esl.state import CallState
from connectors.events import CallAnswered, CallEnded, CallStarted, Event

_ZERO = Decimal(0)
_FINAL = frozenset(("CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"))


class ESLTranslator:
    """Stateful ESL -> events translation for one switch; ``feed`` and ``expire``."""

    def __init__(self, switch_id: str, *, grace: float = 2.0, remember: int = 10_000) -> None:
        self._switch_id = switch_id
        self._grace = Decimal(repr(grace))
        self._remember = remember
        self._calls: dict[str, CallState] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def feed(self, event: ESLEvent) -> list[Event]:
        """Events caused by one ESL event (usually none), in order."""
        uid = event.get("Unique-ID")
        if not uid:
            return []
        name = event.get("Event-Name", "")
        if name == "CHANNEL_UUID":
            self._rename(event.get("Old-Unique-ID", ""), uid)
        out: list[Event] = []
        call = self._calls.get(uid)
        if call is None:  # only billing legs are tracked
            if uid in self._finished or not _is_billing_leg(event, uid):
                return out
            call = self._start(event, uid, out)
            if call is None:
                return out
        if call.answered_at is None:
            answered_at = cdr.micros(event.get("Caller-Channel-Answered-Time"))
            if answered_at is not None:
                call.answered_at = answered_at
                out.append(
                    CallAnswered(
                        switch_id=self._switch_id,
                        call_id=uid,
                        leg_id=uid,
                        channel=uid,
                        account=call.account,
                        at=answered_at,
                    )
                )
        if name in _FINAL:
            if "variable_end_uepoch" in event or "variable_billmsec" in event:
                out.append(self._ended_from_cdr(call, event))
        elif name == "CHANNEL_HANGUP" and call.hangup_at is None:
            call.hangup_at = _event_time(event)
            call.hangup_cause = event.get("Hangup-Cause", "")
        return out

    def expire(self, now: float) -> list[Event]:
        """Finalise calls whose billing leg hung up more than ``grace`` s before ``now``.

        For a call whose CHANNEL_HANGUP came but whose CHANNEL_HANGUP_COMPLETE never will
        (the connection dropped): billed from the ``Caller-Channel-*-Time`` fields known.
        """
        limit = Decimal(repr(now)) - self._grace
        out: list[Event] = []
        for call in list(self._calls.values()):
            if call.hangup_at is not None and call.hangup_at <= limit:
                out.append(self._ended_from_hangup(call))
        return out

    def tracked_calls(self) -> list[str]:
        """Call ids (billing leg Unique-IDs) of the calls in progress."""
        return list(self._calls)

    def drop(self, call_id: str) -> None:
        """Forget a call without an event (ended elsewhere); its late events are ignored."""
        if self._calls.pop(call_id, None) is not None:
            self._remember_finished(call_id)

    # -- state -----------------------------------------------------------------------

    def _start(self, event: ESLEvent, uid: str, out: list[Event]) -> CallState | None:
        account = event.get("variable_accountcode", "")
        if not account:
            return None
        started_at = cdr.micros(event.get("Caller-Channel-Created-Time")) or _event_time(event)
        call = CallState(
            call_id=uid,
            account=account,
            caller=cdr.real_caller(event),
            callee=event.get("Caller-Destination-Number", ""),
            started_at=started_at,
        )
        self._calls[uid] = call
        out.append(
            CallStarted(
                switch_id=self._switch_id,
                call_id=uid,
                leg_id=uid,
                channel=uid,
                account=account,
                caller=call.caller,
                callee=call.callee,
                at=started_at,
            )
        )
        return call

    def _rename(self, old: str, new: str) -> None:
        call = self._calls.pop(old, None) if old and old != new else None
        if call is not None and new not in self._calls:
            call.call_id = new
            self._calls[new] = call

    def _ended_from_cdr(self, call: CallState, event: ESLEvent) -> CallEnded:
        answered_at = cdr.micros(event.get("variable_answer_uepoch")) or call.answered_at
        ended_at = (
            cdr.micros(event.get("variable_end_uepoch"))
            or cdr.micros(event.get("Caller-Channel-Hangup-Time"))
            or _event_time(event)
        )
        cause_name = event.get("variable_hangup_cause") or event.get("Hangup-Cause", "")
        cause = event.get("variable_hangup_cause_q850") or cdr.q850_code(cause_name)
        started_at = cdr.micros(event.get("variable_start_uepoch")) or call.started_at
        billsec = cdr.billable_seconds(event, answered_at, ended_at)
        return self._finish(call, started_at, answered_at, ended_at, billsec, cause_name, cause)

    def _ended_from_hangup(self, call: CallState) -> CallEnded:
        ended_at = call.hangup_at if call.hangup_at is not None else call.started_at
        answered_at = call.answered_at
        billsec = _ZERO if answered_at is None else max(_ZERO, ended_at - answered_at)
        cause = cdr.q850_code(call.hangup_cause)
        return self._finish(
            call, call.started_at, answered_at, ended_at, billsec, call.hangup_cause, cause
        )

    def _finish(
        self,
        call: CallState,
        started_at: Decimal,
        answered_at: Decimal | None,
        ended_at: Decimal,
        billsec: Decimal,
        cause_name: str,
        cause: str,
    ) -> CallEnded:
        del self._calls[call.call_id]
        self._remember_finished(call.call_id)
        answered = answered_at is not None
        return CallEnded(
            switch_id=self._switch_id,
            call_id=call.call_id,
            leg_id=call.call_id,
            channel=call.call_id,
            account=call.account,
            caller=call.caller,
            callee=call.callee,
            answered=answered,
            started_at=started_at,
            answered_at=answered_at,
            ended_at=ended_at,
            billsec=billsec,
            cause=cause,
            disposition=cdr.disposition(answered, cause_name),
        )

    def _remember_finished(self, call_id: str) -> None:
        self._finished[call_id] = None
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)


def _is_billing_leg(event: ESLEvent, uid: str) -> bool:
    if is_loopback_b_leg(event) or is_originated_for_another(event):
        return False
    return billing_leg_uuid(event) == uid


def _event_time(event: ESLEvent) -> Decimal:
    return cdr.micros(event.get("Event-Date-Timestamp")) or _ZERO
