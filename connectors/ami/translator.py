"""Translate AMI events into switch-neutral call events (connectors/events.py).

A call is every channel sharing one ``Linkedid``. Its billing leg (the A leg) is the
channel that runs Dial/Queue (the ``Channel`` of the first ``DialBegin`` that has one);
a call that never dials is billed on its first channel (Uniqueid = Linkedid), answered
when its Local ``;2`` half (or itself) goes ``Up``.

* ``CallStarted`` when the A leg is known (on ``DialBegin``; for a call without Dial only
  when it ends, as only then is it certain that no Dial will come).
* ``CallAnswered`` on the A leg's ``DialEnd DialStatus: ANSWER`` (duplicates ignored).
* ``CallEnded`` exactly once, when every channel of the call has hung up and has its
  ``Cdr`` (its own, or as the ``DestinationChannel`` of another), or ``grace`` seconds
  after the last Hangup (see :meth:`AMITranslator.expire`). ``billsec`` is the A leg's
  Hangup ``Timestamp`` minus the answer ``Timestamp``, exact ``Decimal`` from the text.

State of finished calls is dropped; only a bounded set of recently finished Linkedids
is kept so that stray late events do not resurrect a call. The translator raises no
errors: events it cannot place are ignored.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from connectors.ami.parser import AMIMessage
from connectors.ami.state import Billing, CallState, ChannelState
from connectors.events import CallAnswered, CallEnded, CallStarted, Event
from connectors.live_calls import LiveCall

_ZERO = Decimal(0)
_DISPOSITIONS = frozenset(("ANSWER", "NOANSWER", "BUSY", "CONGESTION", "CANCEL"))
_UNKNOWN_CALLER = frozenset(("", "<unknown>"))


class AMITranslator:
    """Stateful AMI -> events translation for one switch; ``feed`` and ``expire`` only."""

    def __init__(self, switch_id: str, *, grace: float = 2.0, remember: int = 10_000) -> None:
        self._switch_id = switch_id
        self._grace = Decimal(repr(grace))
        self._remember = remember
        self._calls: dict[str, CallState] = {}
        self._by_uid: dict[str, ChannelState] = {}
        self._by_name: dict[str, ChannelState] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._last_ts = _ZERO
        self._handlers: dict[str, Callable[[AMIMessage], list[Event]]] = {
            "Newchannel": self._on_channel_event,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_channel_event,
            "NewAccountCode": self._on_channel_event,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "Hangup": self._on_hangup,
            "Cdr": self._on_cdr,
        }

    def feed(self, message: AMIMessage) -> list[Event]:
        """Events caused by one AMI message (usually none), in order."""
        handler = self._handlers.get(message.get("Event", ""))
        if handler is None:
            return []
        return handler(message)

    def expire(self, now: float) -> list[Event]:
        """Finalise calls whose A leg hung up more than ``grace`` seconds before ``now``."""
        limit = Decimal(repr(now)) - self._grace
        out: list[Event] = []
        for call in list(self._calls.values()):
            if call.last_hangup is None or call.last_hangup > limit:
                continue
            leg = self._billing(call).leg
            if leg.hangup_at is not None:
                out.extend(self._finish(call))
        return out

    # -- resync ----------------------------------------------------------------------

    def tracked_calls(self) -> list[str]:
        """Linkedids of the calls in progress."""
        return list(self._calls)

    def forget(self, call_id: str) -> None:
        """Drop a call the switch no longer has (ended elsewhere); late events are ignored."""
        call = self._calls.get(call_id)
        if call is not None:
            self._drop(call)

    def adopt(self, live: LiveCall, items: Sequence[AMIMessage], now: Decimal) -> list[Event]:
        """Track a live call found by ``CoreShowChannels`` that this translator never saw.

        Its channels come from the listing items; its billing leg is ``live.leg_id``. An
        answered call is taken as answered at ``now`` (the answer was missed) unless its
        A leg's ``Cdr`` later gives ``BillableSeconds``. Returns CallStarted (and
        CallAnswered) for it; nothing when the call is already tracked or finished.
        """
        if live.call_id in self._calls or live.call_id in self._finished:
            return []
        call = self._calls[live.call_id] = CallState(
            linkedid=live.call_id, started_at=live.started_at
        )
        for item in items:
            uid = item.get("Uniqueid", "")
            if not uid or uid in self._by_uid:
                continue
            chan = ChannelState(
                uniqueid=uid,
                name=item.get("Channel", ""),
                linkedid=live.call_id,
                exten=item.get("Exten", ""),
                caller=item.get("CallerIDNum", ""),
                account=item.get("AccountCode", ""),
                created_at=live.started_at,
                up_at=now if item.get("ChannelStateDesc") == "Up" else None,
            )
            call.channels[uid] = chan
            self._by_uid[uid] = chan
            if chan.name:
                self._by_name[chan.name] = chan
        if live.leg_id not in call.channels:
            del self._calls[live.call_id]
            return []
        call.a_uid, call.caller, call.callee = live.leg_id, live.caller, live.callee
        call.account, call.started, call.adopted = live.account, True, True
        out: list[Event] = [
            CallStarted(
                switch_id=self._switch_id,
                call_id=live.call_id,
                leg_id=live.leg_id,
                channel=live.channel,
                account=live.account,
                caller=live.caller,
                callee=live.callee,
                at=live.started_at,
            )
        ]
        if live.answered:
            call.answered_at = now
            out.append(
                CallAnswered(
                    switch_id=self._switch_id,
                    call_id=live.call_id,
                    leg_id=live.leg_id,
                    channel=live.channel,
                    account=live.account,
                    at=now,
                )
            )
        return out

    # -- state -----------------------------------------------------------------------

    def _timestamp(self, msg: AMIMessage) -> Decimal:
        text = msg.get("Timestamp")
        if text:
            with contextlib.suppress(InvalidOperation):
                self._last_ts = Decimal(text)
        return self._last_ts

    def _channel(self, msg: AMIMessage) -> ChannelState | None:
        """The channel an event is about, created on first sight (None if not placeable)."""
        uid = msg.get("Uniqueid")
        if not uid:
            return None
        chan = self._by_uid.get(uid)
        if chan is not None:
            return chan
        linkedid = msg.get("Linkedid") or uid
        if linkedid in self._finished:
            return None
        ts = self._timestamp(msg)
        chan = ChannelState(
            uniqueid=uid,
            name=msg.get("Channel", ""),
            linkedid=linkedid,
            exten=msg.get("Exten", ""),
            caller=msg.get("CallerIDNum", ""),
            account=msg.get("AccountCode", ""),
            created_at=ts,
        )
        call = self._calls.get(linkedid)
        if call is None:
            call = self._calls[linkedid] = CallState(linkedid=linkedid, started_at=ts)
        call.channels[uid] = chan
        self._by_uid[uid] = chan
        if chan.name:
            self._by_name[chan.name] = chan
        return chan

    def _update(self, chan: ChannelState, msg: AMIMessage) -> None:
        caller = msg.get("CallerIDNum")
        if caller is not None and caller not in _UNKNOWN_CALLER:
            chan.caller = caller
        account = msg.get("AccountCode")
        if account:
            chan.account = account

    # -- handlers --------------------------------------------------------------------

    def _on_channel_event(self, msg: AMIMessage) -> list[Event]:
        chan = self._channel(msg)
        if chan is not None:
            self._update(chan, msg)
        return []

    def _on_newstate(self, msg: AMIMessage) -> list[Event]:
        chan = self._channel(msg)
        if chan is None:
            return []
        self._update(chan, msg)
        if msg.get("ChannelStateDesc") == "Up" and chan.up_at is None:
            chan.up_at = self._timestamp(msg)
            call = self._calls[chan.linkedid]
            if call.a_uid is None and call.no_dial_caller is None and chan.name.endswith(";2"):
                first = self._by_name.get(chan.name[:-1] + "1")
                if first is not None and first.uniqueid == call.linkedid:
                    call.no_dial_caller = first.caller
        return []

    def _on_dial_begin(self, msg: AMIMessage) -> list[Event]:
        if "Channel" not in msg:  # an Originate dialing its own first channel
            return []
        chan = self._channel(msg)
        if chan is None:
            return []
        self._update(chan, msg)
        call = self._calls[chan.linkedid]
        if call.a_uid is not None:
            # an adopted call listed before its Dial: the dialing channel is the A leg
            relegged = call.adopted and call.answered_at is None and call.statuses == []
            if not relegged or call.a_uid == chan.uniqueid:
                return []
        call.a_uid = chan.uniqueid
        call.caller = chan.caller
        call.callee = msg.get("Exten", chan.exten)
        call.account = chan.account
        call.started = True
        return [
            CallStarted(
                switch_id=self._switch_id,
                call_id=call.linkedid,
                leg_id=chan.uniqueid,
                channel=chan.name,
                account=call.account,
                caller=call.caller,
                callee=call.callee,
                at=self._timestamp(msg),
            )
        ]

    def _on_dial_end(self, msg: AMIMessage) -> list[Event]:
        if "Channel" not in msg:
            return []
        chan = self._channel(msg)
        if chan is None:
            return []
        call = self._calls[chan.linkedid]
        if call.a_uid != chan.uniqueid:
            return []
        status = msg.get("DialStatus", "")
        key = (chan.uniqueid, msg.get("DestUniqueid", ""), status)
        if key in call.dial_ends:
            return []
        call.dial_ends.add(key)
        call.statuses.append(status)
        if status != "ANSWER" or call.answered_at is not None:
            return []
        call.answered_at = self._timestamp(msg)
        return [
            CallAnswered(
                switch_id=self._switch_id,
                call_id=call.linkedid,
                leg_id=chan.uniqueid,
                channel=chan.name,
                account=call.account or chan.account,
                at=call.answered_at,
            )
        ]

    def _on_hangup(self, msg: AMIMessage) -> list[Event]:
        chan = self._channel(msg)
        if chan is None:
            return []
        if chan.hangup_at is None:
            chan.hangup_at = self._timestamp(msg)
            chan.cause = msg.get("Cause", "")
        call = self._calls[chan.linkedid]
        call.last_hangup = chan.hangup_at
        return self._maybe_finish(call)

    def _on_cdr(self, msg: AMIMessage) -> list[Event]:
        out: list[Event] = []
        chan = self._by_uid.get(msg.get("UniqueID", ""))
        if chan is not None:
            chan.has_cdr = True
            call = self._calls[chan.linkedid]
            if call.adopted and call.a_uid == chan.uniqueid and call.cdr_billsec is None:
                with contextlib.suppress(InvalidOperation):
                    call.cdr_billsec = Decimal(msg.get("BillableSeconds", ""))
            out.extend(self._maybe_finish(self._calls[chan.linkedid]))
        dest = self._by_name.get(msg.get("DestinationChannel", ""))
        if dest is not None and not dest.has_cdr:
            dest.has_cdr = True
            out.extend(self._maybe_finish(self._calls[dest.linkedid]))
        return out

    # -- finalisation ----------------------------------------------------------------

    def _maybe_finish(self, call: CallState) -> list[Event]:
        for chan in call.channels.values():
            if chan.hangup_at is None or not chan.has_cdr:
                return []
        return self._finish(call)

    def _billing(self, call: CallState) -> Billing:
        if call.a_uid is not None:
            leg = call.channels[call.a_uid]
            answered = call.answered_at
            disposition = "ANSWER" if answered is not None else _outcome(call.statuses)
            account = call.account or leg.account
            return Billing(leg, call.caller, call.callee, account, answered, disposition)
        leg = call.channels.get(call.linkedid) or min(
            call.channels.values(), key=lambda chan: chan.created_at
        )
        half_name = leg.name[:-1] + "2" if leg.name.endswith(";1") else None
        half = next((chan for chan in call.channels.values() if chan.name == half_name), None)
        answerer = half if half is not None else leg
        answered = answerer.up_at
        caller = call.no_dial_caller if call.no_dial_caller is not None else leg.caller
        disposition = "ANSWER" if answered is not None else "NOANSWER"
        return Billing(leg, caller, answerer.exten, leg.account, answered, disposition)

    def _finish(self, call: CallState) -> list[Event]:
        bill = self._billing(call)
        leg = bill.leg
        ended = leg.hangup_at if leg.hangup_at is not None else (call.last_hangup or _ZERO)
        out: list[Event] = []
        if not call.started:
            out.append(
                CallStarted(
                    switch_id=self._switch_id,
                    call_id=call.linkedid,
                    leg_id=leg.uniqueid,
                    channel=leg.name,
                    account=bill.account,
                    caller=bill.caller,
                    callee=bill.callee,
                    at=leg.created_at,
                )
            )
            if bill.answered_at is not None:
                out.append(
                    CallAnswered(
                        switch_id=self._switch_id,
                        call_id=call.linkedid,
                        leg_id=leg.uniqueid,
                        channel=leg.name,
                        account=bill.account,
                        at=bill.answered_at,
                    )
                )
        answered_at = bill.answered_at
        if call.adopted and call.cdr_billsec is not None and answered_at is not None:
            answered_at = ended - call.cdr_billsec  # the Cdr knows the missed answer time
        billsec = _ZERO
        if answered_at is not None:
            billsec = max(_ZERO, ended - answered_at)
        out.append(
            CallEnded(
                switch_id=self._switch_id,
                call_id=call.linkedid,
                leg_id=leg.uniqueid,
                channel=leg.name,
                account=bill.account,
                caller=bill.caller,
                callee=bill.callee,
                answered=answered_at is not None,
                started_at=call.started_at,
                answered_at=answered_at,
                ended_at=ended,
                billsec=billsec,
                cause=leg.cause,
                disposition=bill.disposition,
            )
        )
        self._drop(call)
        return out

    def _drop(self, call: CallState) -> None:
        del self._calls[call.linkedid]
        for chan in call.channels.values():
            self._by_uid.pop(chan.uniqueid, None)
            if self._by_name.get(chan.name) is chan:
                del self._by_name[chan.name]
        self._finished[call.linkedid] = None
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)


def _outcome(statuses: list[str]) -> str:
    """The call's outcome from the A leg's DialEnd statuses (no ANSWER among them)."""
    if not statuses:
        return "CANCEL"
    last = statuses[-1]
    return last if last in _DISPOSITIONS else "FAILED"
