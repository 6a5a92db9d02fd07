"""Billing facts read from one FreeSWITCH channel's event headers (pure functions).

* Times: the ``*_uepoch`` variables and ``Caller-Channel-*-Time`` headers are epoch
  microseconds as text, ``0`` meaning "never"; they become exact ``Decimal`` seconds.
* Caller: once an originated leg is answered its caller id is *flipped* to the callee's
  view (``Caller-Caller-ID-Number: default``), so the real caller is read from
  ``Caller-Orig-Caller-ID-Number``, ``variable_origination_caller_id_number`` or
  ``Caller-ANI`` before the flippable header.
* Billable seconds: the switch's own ``variable_billmsec`` (what mod_xml_cdr reports;
  ``variable_billsec`` is whole-second timestamps subtracted, e.g. 6 for 5.14 s), else
  ``variable_billusec``, else answer-to-end from the µs timestamps.
* Cause: the Q.850 code as text (``variable_hangup_cause_q850``); from a cause name
  FreeSWITCH maps every code above 127 (ALLOTTED_TIMEOUT, SYSTEM_SHUTDOWN,
  ORIGINATOR_CANCEL, ...) to 16, and so does :func:`q850_code`.
* Disposition (the words of ``connectors.events.CallEnded``), never "answered" from the
  cause (a killed answered call and an unanswered bare bridge both end NORMAL_CLEARING):

  ========================================================  ==========
  answered (answer time not 0)                              ANSWER
  USER_BUSY                                                 BUSY
  NO_ANSWER, NO_USER_RESPONSE, ALLOTTED_TIMEOUT,
  PROGRESS_TIMEOUT, NORMAL_CLEARING (a bridge that rang out)  NOANSWER
  ORIGINATOR_CANCEL                                         CANCEL
  NORMAL_CIRCUIT_CONGESTION, SWITCH_CONGESTION              CONGESTION
  anything else (CALL_REJECTED, OUTGOING_CALL_BARRED, ...)  FAILED
  ========================================================  ==========
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

_ZERO = Decimal(0)
_CALLER_HEADERS = (
    "Caller-Orig-Caller-ID-Number",
    "variable_origination_caller_id_number",
    "Caller-ANI",
    "Caller-Caller-ID-Number",
)

# switch_types.h switch_call_cause_t, codes up to 127 (switch_channel_cause_q850 maps
# every larger one to NORMAL_CLEARING).
_Q850 = {
    "UNSPECIFIED": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_TRANSIT_NET": 2,
    "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6,
    "CALL_AWARDED_DELIVERED": 7,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "REDIRECTION_TO_NEW_DESTINATION": 23,
    "EXCHANGE_ROUTING_ERROR": 25,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "RESPONSE_TO_STATUS_ENQUIRY": 30,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "ACCESS_INFO_DISCARDED": 43,
    "REQUESTED_CHAN_UNAVAIL": 44,
    "PRE_EMPTED": 45,
    "FACILITY_NOT_SUBSCRIBED": 50,
    "OUTGOING_CALL_BARRED": 52,
    "INCOMING_CALL_BARRED": 54,
    "BEARERCAPABILITY_NOTAUTH": 57,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63,
    "BEARERCAPABILITY_NOTIMPL": 65,
    "CHAN_NOT_IMPLEMENTED": 66,
    "FACILITY_NOT_IMPLEMENTED": 69,
    "SERVICE_NOT_IMPLEMENTED": 79,
    "INVALID_CALL_REFERENCE": 81,
    "INCOMPATIBLE_DESTINATION": 88,
    "INVALID_MSG_UNSPECIFIED": 95,
    "MANDATORY_IE_MISSING": 96,
    "MESSAGE_TYPE_NONEXIST": 97,
    "WRONG_MESSAGE": 98,
    "IE_NONEXIST": 99,
    "INVALID_IE_CONTENTS": 100,
    "WRONG_CALL_STATE": 101,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MANDATORY_IE_LENGTH_ERROR": 103,
    "PROTOCOL_ERROR": 111,
    "INTERWORKING": 127,
}
_NORMAL_CLEARING = "16"
_DISPOSITIONS = {
    "USER_BUSY": "BUSY",
    "NO_ANSWER": "NOANSWER",
    "NO_USER_RESPONSE": "NOANSWER",
    "ALLOTTED_TIMEOUT": "NOANSWER",
    "PROGRESS_TIMEOUT": "NOANSWER",
    "NORMAL_CLEARING": "NOANSWER",
    "ORIGINATOR_CANCEL": "CANCEL",
    "NORMAL_CIRCUIT_CONGESTION": "CONGESTION",
    "SWITCH_CONGESTION": "CONGESTION",
}


def micros(text: str | None) -> Decimal | None:
    """Epoch microseconds as exact seconds; None for absent, ``0`` or not a number."""
    if not text or text == "0":
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0:
        return None
    return value.scaleb(-6)


def real_caller(headers: Mapping[str, str]) -> str:
    """The calling number as dialled from, not the flipped caller id of an answered leg."""
    for name in _CALLER_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return ""


def billable_seconds(
    headers: Mapping[str, str], answered_at: Decimal | None, ended_at: Decimal
) -> Decimal:
    """Exact billable seconds of a finished leg (0 when it was never answered)."""
    if answered_at is None:
        return _ZERO
    for name, exponent in (("variable_billmsec", -3), ("variable_billusec", -6)):
        text = headers.get(name)
        if text:
            try:
                value = Decimal(text)
            except InvalidOperation:
                continue
            if value.is_finite() and value >= 0:
                return value.scaleb(exponent)
    return max(_ZERO, ended_at - answered_at)


def q850_code(cause: str) -> str:
    """The Q.850 code (as text) of a FreeSWITCH cause name; ``16`` for switch-only causes."""
    code = _Q850.get(cause)
    return _NORMAL_CLEARING if code is None else str(code)


def disposition(answered: bool, cause: str) -> str:
    """ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION or FAILED (table in the docstring)."""
    if answered:
        return "ANSWER"
    return _DISPOSITIONS.get(cause, "FAILED")
