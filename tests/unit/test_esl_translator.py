"""ESLTranslator on hand-written event sequences (variations beyond the recordings)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.esl import cdr
from connectors.esl.parser import ESLEvent
from connectors.esl.translator import ESLTranslator
from connectors.events import CallAnswered, CallEnded, CallEvent, CallStarted, Event

A = "aaaaaaaa-0000-4000-8000-000000000001"  # loopback A-leg: the billing leg
B = "bbbbbbbb-0000-4000-8000-000000000002"  # its loopback B partner
TEMP = "cccccccc-0000-4000-8000-000000000003"  # A's Unique-ID before CHANNEL_UUID
CREATED = "1795630917000000"
ANSWERED = "1795630917596364"


def event(name: str, uid: str, ts: str, **headers: str) -> ESLEvent:
    ev = ESLEvent({"Event-Name": name, "Unique-ID": uid, "Event-Date-Timestamp": ts})
    ev.update({key.replace("__", "-"): value for key, value in headers.items()})
    return ev


def leg(name: str, uid: str, ts: str, *, answered: str = "0", **extra: str) -> ESLEvent:
    base = {
        "variable_accountcode": "tenant-a",
        "Caller-Caller-ID-Number": "default" if answered != "0" else "1000",  # flipped
        "Caller-Orig-Caller-ID-Number": "1000",
        "Caller-Destination-Number": "15551234567",
        "Caller-Channel-Created-Time": CREATED,
        "Caller-Channel-Answered-Time": answered,
    }
    if uid == B:
        base.update(variable_loopback_leg="B", variable_other_loopback_leg_uuid=A)
    else:
        base.update(variable_loopback_leg="A", variable_other_loopback_leg_uuid=B)
    base.update(extra)
    return event(name, uid, ts, **base)


def final(name: str, uid: str, *, answered: bool = True, **extra: str) -> ESLEvent:
    """CHANNEL_HANGUP_COMPLETE / CHANNEL_DESTROY with its CDR variables."""
    cdr_vars = {
        "variable_start_uepoch": CREATED,
        "variable_answer_uepoch": ANSWERED if answered else "0",
        "variable_end_uepoch": "1795630920616370",
        "variable_billsec": "3" if answered else "0",
        "variable_billmsec": "3020" if answered else "0",
        "variable_billusec": "3020006" if answered else "0",
        "variable_hangup_cause": "NORMAL_CLEARING",
        "variable_hangup_cause_q850": "16",
        "Hangup-Cause": "NORMAL_CLEARING",
        "Caller-Channel-Hangup-Time": "1795630920616370",
    }
    cdr_vars.update(extra)
    return leg(name, uid, "1795630920616370", answered=ANSWERED if answered else "0", **cdr_vars)


def feed_all(tr: ESLTranslator, events: list[ESLEvent]) -> list[Event]:
    return [out for ev in events for out in tr.feed(ev)]


def call_events(events: list[Event]) -> list[CallEvent]:
    calls = [e for e in events if isinstance(e, CallStarted | CallAnswered | CallEnded)]
    assert len(calls) == len(events)
    return calls


def answered_call() -> list[ESLEvent]:
    return [
        event("CODEC", TEMP, CREATED, Channel__Name="loopback/1000/default-a"),
        event("CHANNEL_UUID", A, CREATED, Old__Unique__ID=TEMP),
        leg("CHANNEL_CREATE", A, CREATED),
        leg("CHANNEL_CREATE", B, CREATED),
        leg("CHANNEL_ANSWER", A, ANSWERED, answered=ANSWERED),
        leg("CHANNEL_ANSWER", B, ANSWERED, answered=ANSWERED),
        event("BACKGROUND_JOB", "", ANSWERED),
        leg("CHANNEL_HANGUP", B, "1795630920596369", answered=ANSWERED),
        leg("CHANNEL_HANGUP", A, "1795630920596369", answered=ANSWERED),
        final("CHANNEL_HANGUP_COMPLETE", B, variable_billmsec="3000"),
        final("CHANNEL_HANGUP_COMPLETE", A),
        final("CHANNEL_DESTROY", B),
        final("CHANNEL_DESTROY", A),
    ]


def test_given_answered_loopback_call_when_fed_then_started_answered_ended_once() -> None:
    tr = ESLTranslator("fs")
    events = feed_all(tr, answered_call())
    assert [type(e) for e in events] == [CallStarted, CallAnswered, CallEnded]
    started, answered, ended = events
    assert started == CallStarted(
        switch_id="fs", call_id=A, leg_id=A, channel=A, account="tenant-a", caller="1000",
        callee="15551234567", at=Decimal("1795630917"),
    )  # fmt: skip
    assert isinstance(answered, CallAnswered) and answered.at == Decimal("1795630917.596364")
    assert ended == CallEnded(
        switch_id="fs", call_id=A, leg_id=A, channel=A, account="tenant-a", caller="1000",
        callee="15551234567", answered=True, started_at=Decimal("1795630917"),
        answered_at=Decimal("1795630917.596364"), ended_at=Decimal("1795630920.61637"),
        billsec=Decimal("3.02"), cause="16", disposition="ANSWER",
    )  # fmt: skip
    assert tr.tracked_calls() == []


def test_given_answer_before_create_when_fed_then_call_starts_on_first_event_seen() -> None:
    tr = ESLTranslator("fs")
    events = feed_all(
        tr,
        [
            leg("CHANNEL_ANSWER", A, ANSWERED, answered=ANSWERED),
            leg("CHANNEL_CREATE", A, CREATED),
            leg("CHANNEL_ANSWER", A, ANSWERED, answered=ANSWERED),
        ],
    )
    assert [type(e) for e in events] == [CallStarted, CallAnswered]
    assert events[0] == CallStarted("fs", A, A, A, "tenant-a", "1000", "15551234567",
                                    Decimal("1795630917"))  # fmt: skip
    assert tr.tracked_calls() == [A]


def test_given_only_hangup_complete_seen_when_fed_then_flipped_caller_not_used() -> None:
    events = ESLTranslator("fs").feed(final("CHANNEL_HANGUP_COMPLETE", A))
    assert [type(e) for e in events] == [CallStarted, CallAnswered, CallEnded]
    assert all(e.account == "tenant-a" for e in call_events(events))
    assert isinstance(events[2], CallEnded) and events[2].caller == "1000"


def test_given_accountcode_set_after_create_when_fed_then_started_at_creation_time() -> None:
    tr = ESLTranslator("fs")
    assert tr.feed(leg("CHANNEL_CREATE", A, CREATED, variable_accountcode="")) == []
    [started] = tr.feed(leg("CHANNEL_EXECUTE", A, "1795630917100000"))
    assert isinstance(started, CallStarted) and started.at == Decimal("1795630917")


def test_given_call_tracked_under_temporary_uuid_when_channel_uuid_then_moved() -> None:
    tr = ESLTranslator("fs")
    [started] = tr.feed(leg("CHANNEL_OUTGOING", TEMP, CREATED))
    assert isinstance(started, CallStarted) and tr.tracked_calls() == [TEMP]
    assert tr.feed(leg("CHANNEL_UUID", A, CREATED, Old__Unique__ID=TEMP)) == []
    assert tr.tracked_calls() == [A]
    events = tr.feed(final("CHANNEL_HANGUP_COMPLETE", A))
    assert [type(e) for e in events] == [CallAnswered, CallEnded]
    assert {e.call_id for e in call_events(events)} == {A} and tr.tracked_calls() == []


def test_given_destroy_without_hangup_complete_when_fed_then_ended_once() -> None:
    tr = ESLTranslator("fs")
    tr.feed(leg("CHANNEL_CREATE", A, CREATED))
    [ended] = tr.feed(final("CHANNEL_DESTROY", A, answered=False))
    assert isinstance(ended, CallEnded) and ended.billsec == 0 and not ended.answered
    assert tr.feed(final("CHANNEL_HANGUP_COMPLETE", A, answered=False)) == []
    assert tr.feed(leg("CHANNEL_ANSWER", A, ANSWERED, answered=ANSWERED)) == []  # no resurrection


def test_given_hangup_without_hangup_complete_when_expired_then_ended_after_grace() -> None:
    tr = ESLTranslator("fs", grace=2.0)
    feed_all(
        tr,
        [
            leg("CHANNEL_CREATE", A, CREATED),
            leg("CHANNEL_ANSWER", A, ANSWERED, answered=ANSWERED),
            leg("CHANNEL_HANGUP", A, "1795630921000001", answered=ANSWERED,
                Hangup__Cause="ALLOTTED_TIMEOUT"),
        ],
    )  # fmt: skip
    assert tr.expire(1795630922.9) == []
    [ended] = tr.expire(1795630923.1)
    assert isinstance(ended, CallEnded)
    assert ended.billsec == Decimal("3.403637")  # exact µs: hangup event - answer
    assert ended.ended_at == Decimal("1795630921.000001")
    assert (ended.cause, ended.disposition, ended.answered) == ("16", "ANSWER", True)
    assert tr.tracked_calls() == [] and tr.expire(1795630999.0) == []
    assert tr.feed(final("CHANNEL_HANGUP_COMPLETE", A)) == []


def test_given_unanswered_busy_hangup_when_expired_then_busy_with_q850_from_name() -> None:
    tr = ESLTranslator("fs", grace=0.5)
    tr.feed(leg("CHANNEL_CREATE", A, CREATED))
    tr.feed(leg("CHANNEL_HANGUP", A, "1795630920000000", Hangup__Cause="USER_BUSY"))
    [ended] = tr.expire(1795630921.0)
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.disposition, ended.billsec) == ("17", "BUSY", Decimal(0))
    assert ended.answered_at is None


@pytest.mark.parametrize(
    "headers",
    [
        {"variable_accountcode": ""},  # far-end SIP leg, callcenter agent leg
        {"variable_originator": B},  # bridged outbound leg
        {"Other-Type": "originator"},
    ],
)
def test_given_leg_that_is_not_a_billed_call_when_fed_then_no_events(
    headers: dict[str, str],
) -> None:
    tr = ESLTranslator("fs")
    events = [leg("CHANNEL_CREATE", A, CREATED, **headers), final("CHANNEL_HANGUP_COMPLETE", A)]
    for ev in events:
        ev.update(headers)
    assert feed_all(tr, events) == [] and tr.tracked_calls() == []


def test_given_loopback_b_leg_alone_when_fed_then_no_events() -> None:
    tr = ESLTranslator("fs")
    lone_b = leg("CHANNEL_CREATE", B, CREATED)
    del lone_b["variable_other_loopback_leg_uuid"]
    assert tr.feed(lone_b) == [] and tr.feed(final("CHANNEL_HANGUP_COMPLETE", B)) == []
    assert tr.feed(event("HEARTBEAT", "", CREATED)) == [] and tr.tracked_calls() == []


def test_given_dropped_call_when_its_events_arrive_then_ignored() -> None:
    tr = ESLTranslator("fs")
    tr.feed(leg("CHANNEL_CREATE", A, CREATED))
    tr.drop(A)
    tr.drop("unknown")
    assert tr.tracked_calls() == []
    assert tr.feed(final("CHANNEL_HANGUP_COMPLETE", A)) == []


def test_given_bounded_memory_when_more_calls_finish_then_oldest_forgotten() -> None:
    tr = ESLTranslator("fs", remember=2)
    ids = [f"dddddddd-0000-4000-8000-00000000000{n}" for n in range(3)]
    for uid in ids:
        assert len(tr.feed(final("CHANNEL_HANGUP_COMPLETE", uid))) == 3
    assert tr.feed(final("CHANNEL_DESTROY", ids[2])) == []
    assert tr.feed(final("CHANNEL_DESTROY", ids[1])) == []
    assert len(tr.feed(final("CHANNEL_DESTROY", ids[0]))) == 3  # forgotten, so new again


@pytest.mark.parametrize(
    ("remove", "billsec"),
    [((), "3.020"), (("variable_billmsec",), "3.020006"),
     (("variable_billmsec", "variable_billusec"), "3.020006")],
)  # fmt: skip
def test_given_cdr_without_billmsec_when_ended_then_billusec_or_timestamps(
    remove: tuple[str, ...], billsec: str
) -> None:
    ev = final("CHANNEL_HANGUP_COMPLETE", A)
    for name in remove:
        del ev[name]
    ended = ESLTranslator("fs").feed(ev)[-1]
    assert isinstance(ended, CallEnded) and ended.billsec == Decimal(billsec)
    assert str(ended.billsec) == billsec  # exact, never through a float


@pytest.mark.parametrize(
    ("cause", "answered", "disposition", "q850"),
    [
        ("USER_BUSY", False, "BUSY", "17"),
        ("NO_ANSWER", False, "NOANSWER", "19"),
        ("ALLOTTED_TIMEOUT", False, "NOANSWER", "16"),
        ("NORMAL_CLEARING", False, "NOANSWER", "16"),
        ("ORIGINATOR_CANCEL", False, "CANCEL", "16"),
        ("NORMAL_CIRCUIT_CONGESTION", False, "CONGESTION", "34"),
        ("CALL_REJECTED", False, "FAILED", "21"),
        ("OUTGOING_CALL_BARRED", False, "FAILED", "52"),
        ("SYSTEM_SHUTDOWN", True, "ANSWER", "16"),
        ("USER_BUSY", True, "ANSWER", "17"),
    ],
)
def test_given_hangup_cause_when_ended_then_disposition_and_q850(
    cause: str, answered: bool, disposition: str, q850: str
) -> None:
    ev = final("CHANNEL_HANGUP_COMPLETE", A, answered=answered, variable_hangup_cause=cause)
    del ev["variable_hangup_cause_q850"]  # derived from the name, as FreeSWITCH does
    ended = ESLTranslator("fs").feed(ev)[-1]
    assert isinstance(ended, CallEnded)
    assert (ended.disposition, ended.cause, ended.answered) == (disposition, q850, answered)
    assert cdr.q850_code(cause) == q850


def test_given_micros_text_then_exact_seconds_or_none() -> None:
    assert cdr.micros("1795630917596364") == Decimal("1795630917.596364")
    assert [cdr.micros(text) for text in ("0", "", None, "x", "-5", "NaN")] == [None] * 6
