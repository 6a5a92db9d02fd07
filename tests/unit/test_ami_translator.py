"""AMITranslator on hand-written AMI sequences (variations beyond the recordings)."""

from __future__ import annotations

from decimal import Decimal

from connectors.ami.parser import AMIMessage
from connectors.ami.translator import AMITranslator
from connectors.events import CallAnswered, CallEnded, CallStarted, Event

LINKED = "100.1"


def ev(name: str, ts: str, **fields: str) -> AMIMessage:
    msg = AMIMessage(Event=name)
    msg.update(fields)
    msg["Timestamp"] = ts
    return msg


def chan(name: str, uid: str, **extra: str) -> dict[str, str]:
    base = {"Channel": name, "Uniqueid": uid, "Linkedid": LINKED, "Exten": "5551000"}
    base.update({"CallerIDNum": "15550001", "AccountCode": "acme"})
    base.update(extra)
    return base


A = chan("PJSIP/alice-01", LINKED)
B = chan("PJSIP/carrier-02", "100.2", CallerIDNum="5551000")


def dial_call(status: str, *, with_cdrs: bool = True) -> list[AMIMessage]:
    msgs = [
        ev("Newchannel", "10.0", **A),
        ev("DialBegin", "10.1", **A, DestChannel=B["Channel"], DestUniqueid="100.2"),
        ev("Newchannel", "10.1", **B),
        ev("DialEnd", "12.250", **A, DestUniqueid="100.2", DialStatus=status),
        ev("DialEnd", "12.251", **A, DestUniqueid="100.2", DialStatus=status),  # duplicate
        ev("Hangup", "20.0", **B, Cause="16"),
    ]
    if with_cdrs:
        msgs.append(ev("Cdr", "20.1", UniqueID=LINKED, DestinationChannel=B["Channel"]))
    msgs.append(ev("Hangup", "20.75", **A, Cause="17"))
    return msgs


def feed_all(tr: AMITranslator, msgs: list[AMIMessage]) -> list[Event]:
    return [event for msg in msgs for event in tr.feed(msg)]


def test_given_answered_dial_when_fed_then_started_answered_ended_once_in_order() -> None:
    events = feed_all(AMITranslator("pbx"), dial_call("ANSWER"))
    assert [type(e) for e in events] == [CallStarted, CallAnswered, CallEnded]
    started, answered, ended = events
    assert isinstance(started, CallStarted) and started.channel == "PJSIP/alice-01"
    assert (started.account, started.caller, started.callee) == ("acme", "15550001", "5551000")
    assert isinstance(answered, CallAnswered) and answered.at == Decimal("12.250")
    assert isinstance(ended, CallEnded)
    assert ended.billsec == Decimal("8.500") and ended.cause == "17"
    assert ended.disposition == "ANSWER" and ended.leg_id == LINKED and ended.call_id == LINKED


def test_given_busy_dial_when_ended_then_unanswered_with_zero_billsec() -> None:
    events = feed_all(AMITranslator("pbx"), dial_call("BUSY"))
    ended = events[-1]
    assert isinstance(ended, CallEnded)
    assert (ended.answered, ended.billsec, ended.disposition) == (False, Decimal(0), "BUSY")


def test_given_missing_cdrs_when_grace_passes_then_ended_by_expire_exactly_once() -> None:
    tr = AMITranslator("pbx", grace=2.0)
    events = feed_all(tr, dial_call("ANSWER", with_cdrs=False))
    assert not [e for e in events if isinstance(e, CallEnded)]
    assert tr.expire(21.0) == []
    [ended] = tr.expire(23.0)
    assert isinstance(ended, CallEnded) and ended.billsec == Decimal("8.500")
    assert tr.expire(99.0) == []


def test_given_call_finished_when_late_events_arrive_then_no_second_call() -> None:
    tr = AMITranslator("pbx")
    feed_all(tr, dial_call("ANSWER"))
    late = [ev("NewCallerid", "21", **A), ev("Hangup", "21", **A, Cause="16")]
    assert feed_all(tr, late) == []
    assert tr.expire(1e12) == []


def test_given_cdr_before_hangup_when_fed_then_ended_after_last_hangup() -> None:
    msgs = dial_call("ANSWER")
    cdr = msgs.pop(-2)
    msgs.insert(3, cdr)
    events = feed_all(AMITranslator("pbx"), msgs)
    assert isinstance(events[-1], CallEnded) and events[-1].ended_at == Decimal("20.75")


def test_given_local_call_without_dial_when_ended_then_billed_on_first_half() -> None:
    one = chan("Local/1003@test-1;1", LINKED, CallerIDNum="<unknown>", AccountCode="")
    two = chan("Local/1003@test-1;2", "100.2", Exten="1003")
    msgs = [
        ev("Newchannel", "1.0", **one),
        ev("Newchannel", "1.0", **two),
        ev("NewCallerid", "1.1", **{**one, "CallerIDNum": "15550009"}),
        ev("NewAccountCode", "1.1", **{**one, "AccountCode": "t-a"}),
        ev("Newstate", "1.5", **{**two, "ChannelStateDesc": "Up"}),
        ev("NewCallerid", "3.0", **{**one, "CallerIDNum": "1003"}),  # connected line flip
        ev("Cdr", "4.0", UniqueID="100.2", DestinationChannel=""),
        ev("Hangup", "4.0", **two, Cause="16"),
        ev("Cdr", "4.1", UniqueID=LINKED, DestinationChannel=""),
        ev("Hangup", "4.25", **one, Cause="16"),
    ]
    events = feed_all(AMITranslator("pbx"), msgs)
    assert [type(e) for e in events] == [CallStarted, CallAnswered, CallEnded]
    ended = events[-1]
    assert isinstance(ended, CallEnded)
    assert (ended.caller, ended.callee, ended.account) == ("15550009", "1003", "t-a")
    assert ended.billsec == Decimal("2.75") and ended.channel == "Local/1003@test-1;1"


def test_given_many_calls_when_all_finished_then_no_state_left() -> None:
    tr = AMITranslator("pbx")
    for i in range(50):
        a = chan(f"PJSIP/a-{i}", f"{i}.0", Linkedid=f"{i}.0")
        msgs = [
            ev("Newchannel", "1", **a),
            ev("Hangup", "2", **a, Cause="16"),
            ev("Cdr", "2", UniqueID=f"{i}.0", DestinationChannel=""),
        ]
        assert isinstance(feed_all(tr, msgs)[-1], CallEnded)
    assert tr.expire(1e12) == []


def test_given_unrelated_events_when_fed_then_nothing() -> None:
    tr = AMITranslator("pbx")
    assert tr.feed(ev("DeviceStateChange", "1", Device="PJSIP/a", State="INUSE")) == []
    assert tr.feed(AMIMessage(Response="Success")) == []
    assert tr.feed(ev("Cdr", "1", UniqueID="nope")) == []
