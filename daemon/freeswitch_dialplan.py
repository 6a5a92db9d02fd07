"""FreeSWITCH dialplan answers for mod_xml_curl: request fields in, XML documents out.

Pure (no I/O). ``dialplan_request`` turns the fields mod_xml_curl posts for a
``section=dialplan`` lookup (channel event headers: ``Hunt-*``, ``Caller-*``,
``Unique-ID``, ``variable_*``) into an ``AuthorizationRequest``; the ``*_document``
functions render the answer FreeSWITCH executes:

* allowed: set ``rk_auth_result=ALLOW``, ``rk_auth_reason``, ``rk_max_duration``,
  ``rk_call_ref``, ``sched_hangup +<max_usage> ALLOTTED_TIMEOUT``, then ``bridge`` over
  the LCR routes (``|`` = try one after the other) or ``transfer`` to the authorized
  context;
* denied: set ``rk_auth_result=DENY`` and ``rk_auth_reason`` (and ``rk_auth_detail``),
  ``respond 402`` for INSUFFICIENT_CREDIT, and ``hangup <cause>`` (``HANGUP_CAUSES``);
* not found: any other context or section, so FreeSWITCH uses its static dialplan.

Every value is XML-escaped. Values that FreeSWITCH would also *interpret* in
application data (the destination in ``transfer``, the call reference in ``set``:
``${...}`` expansion, spaces between arguments, ``|`` and ``,`` in dial strings) are
restricted to a safe character set when the request is read; anything else is a
``BAD_REQUEST`` denial naming the field.

Errors: no exception is raised here. A malformed request is the value
``BadDialplanRequest(field, message)`` (code ``BAD_REQUEST``), rendered as a denial.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from connectors.esl.legs import billing_leg_uuid
from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason

DEFAULT_CONTEXTS: tuple[str, ...] = ("ratekeeper",)
DEFAULT_AUTHORIZED_CONTEXT = "authorized"
MAX_FIELD_LENGTH = 256

HANGUP_CAUSES: dict[Reason, str] = {
    Reason.INSUFFICIENT_CREDIT: "CALL_REJECTED",
    Reason.CONCURRENCY_LIMIT: "NORMAL_CIRCUIT_CONGESTION",
    Reason.SEAT_LIMIT: "NORMAL_CIRCUIT_CONGESTION",
    Reason.CPS_LIMIT: "NORMAL_CIRCUIT_CONGESTION",
    Reason.NO_RATE: "NO_ROUTE_DESTINATION",
    Reason.UNKNOWN_ACCOUNT: "CALL_REJECTED",
    Reason.ACCOUNT_SUSPENDED: "CALL_REJECTED",
    Reason.TRIAL_EXPIRED: "CALL_REJECTED",
    Reason.TRIAL_RESTRICTED: "OUTGOING_CALL_BARRED",
    Reason.MARGIN_GUARD: "CALL_REJECTED",
    Reason.BAD_REQUEST: "INVALID_NUMBER_FORMAT",
    Reason.SERVICE_UNAVAILABLE: "NORMAL_TEMPORARY_FAILURE",
}
"""The FreeSWITCH hangup cause of each denial (xml_curl ``hangup``, ESL ``uuid_kill``)."""

NOT_FOUND_DOCUMENT = (
    '<document type="freeswitch/xml"><section name="result">'
    '<result status="not found"/></section></document>'
)
"""The answer for a lookup ratekeeper does not serve: FreeSWITCH falls back to static XML."""

# The fields this module reads; a front end need not decode any other posted field.
SECTION = "section"
HUNT_CONTEXT, CALLER_CONTEXT = "Hunt-Context", "Caller-Context"
HUNT_DESTINATION, CALLER_DESTINATION = "Hunt-Destination-Number", "Caller-Destination-Number"
CALLER_NUMBER, CALLER_ANI = "Caller-Caller-ID-Number", "Caller-ANI"
ACCOUNTCODE, RK_ACCOUNT = "variable_accountcode", "variable_rk_account"
UNIQUE_ID, OTHER_LOOPBACK_UUID = "Unique-ID", "variable_other_loopback_leg_uuid"
DIALPLAN_FIELDS: frozenset[str] = frozenset(
    {
        SECTION,
        HUNT_CONTEXT,
        CALLER_CONTEXT,
        HUNT_DESTINATION,
        CALLER_DESTINATION,
        CALLER_NUMBER,
        CALLER_ANI,
        ACCOUNTCODE,
        RK_ACCOUNT,
        UNIQUE_ID,
        "variable_loopback_leg",
        OTHER_LOOPBACK_UUID,
        "variable_originator",
        "Other-Type",
    }
)

# Digits, letters and the few signs a dialled number or a channel uuid carries; no
# space, '$', '{', '}', '|', ',', quotes or backslash (FreeSWITCH would interpret them).
_SAFE_TOKEN = re.compile(r"[0-9A-Za-z+*#._~@:-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class BadDialplanRequest:
    """A malformed dialplan request; ``field`` names the posted field at fault."""

    field: str
    message: str
    code: str = "BAD_REQUEST"


def hangup_cause(reason: Reason) -> str:
    """The FreeSWITCH hangup cause for a denial reason (CALL_REJECTED when unmapped)."""
    return HANGUP_CAUSES.get(reason, "CALL_REJECTED")


def hunt_context(fields: Mapping[str, str]) -> str:
    """The dialplan context being hunted (``Hunt-Context``, else ``Caller-Context``)."""
    return fields.get(HUNT_CONTEXT) or fields.get(CALLER_CONTEXT) or ""


def is_authorization_lookup(fields: Mapping[str, str], contexts: Sequence[str]) -> bool:
    """True when ratekeeper answers this lookup: a dialplan hunt in one of ``contexts``."""
    return fields.get(SECTION) == "dialplan" and hunt_context(fields) in contexts


def _first(fields: Mapping[str, str], *names: str) -> tuple[str, str]:
    """The first non-empty field among ``names``: (its name, its value); else (names[0], "")."""
    for name in names:
        value = fields.get(name)
        if value:
            return name, value
    return names[0], ""


def _check(name: str, value: str, *, token: bool) -> BadDialplanRequest | None:
    if not value:
        return BadDialplanRequest(name, "missing")
    if len(value) > MAX_FIELD_LENGTH:
        return BadDialplanRequest(name, f"longer than {MAX_FIELD_LENGTH} characters")
    if token and not _SAFE_TOKEN.fullmatch(value):
        return BadDialplanRequest(name, "contains characters not allowed here")
    if _CONTROL.search(value):
        return BadDialplanRequest(name, "contains control characters")
    return None


def dialplan_request(
    fields: Mapping[str, str], switch_id: str
) -> AuthorizationRequest | BadDialplanRequest:
    """The authorization request of a dialplan lookup, or what is wrong with it.

    The call reference is the billing leg's uuid (a loopback B-leg names its A-leg), the
    account ``variable_accountcode`` (else ``variable_rk_account``), the caller
    ``Caller-Caller-ID-Number`` (else ``Caller-ANI``).
    """
    destination_field, destination = _first(fields, HUNT_DESTINATION, CALLER_DESTINATION)
    account_field, account = _first(fields, ACCOUNTCODE, RK_ACCOUNT)
    caller_field, caller = _first(fields, CALLER_NUMBER, CALLER_ANI)
    call_ref = billing_leg_uuid(fields)
    call_ref_field = UNIQUE_ID if call_ref == fields.get(UNIQUE_ID, "") else OTHER_LOOPBACK_UUID
    problem = (
        _check(destination_field, destination, token=True)
        or _check(call_ref_field, call_ref, token=True)
        or _check(account_field, account, token=False)
        or (_check(caller_field, caller, token=False) if caller else None)
    )
    if problem is not None:
        return problem
    return AuthorizationRequest(
        switch_id=switch_id,
        call_id=call_ref,
        account=account,
        caller=caller,
        callee=destination,
    )


_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_ATTR_SPECIALS = re.compile(r'[&<>"\n\r\t]')


def _attr(value: str) -> str:
    """``value`` as a double-quoted XML attribute (``& < > "`` and whitespace escaped)."""
    if _ATTR_SPECIALS.search(value) is None:
        return '"' + value + '"'
    return '"' + escape(value, _ATTR_ENTITIES) + '"'


def _action(application: str, data: str) -> str:
    return f"<action application={_attr(application)} data={_attr(data)}/>"


def _document(context: str, extension: str, actions: list[str]) -> str:
    body = "".join(actions)
    return (
        '<document type="freeswitch/xml">'
        '<section name="dialplan" description="ratekeeper">'
        f"<context name={_attr(context)}>"
        f"<extension name={_attr(extension)}>"
        '<condition field="destination_number" expression="^(.*)$">'
        f"{body}</condition></extension></context></section></document>"
    )


def allowed_document(
    decision: AuthorizationDecision,
    *,
    context: str,
    call_ref: str,
    destination: str,
    authorized_context: str = DEFAULT_AUTHORIZED_CONTEXT,
) -> str:
    """The dialplan of an allowed call: limits as variables, then bridge or transfer."""
    seconds = str(decision.max_usage)
    actions = [
        _action("set", "rk_auth_result=ALLOW"),
        _action("set", f"rk_auth_reason={decision.reason}"),
        _action("set", f"rk_max_duration={seconds}"),
        _action("set", f"rk_call_ref={call_ref}"),
        # counted from the answer, not from now: ring time never eats into the credit
        _action("set", f"execute_on_answer=sched_hangup +{seconds} ALLOTTED_TIMEOUT"),
    ]
    if decision.routes:
        actions.append(_action("set", "continue_on_fail=true"))
        actions.append(_action("bridge", "|".join(r.dial_string for r in decision.routes)))
    else:
        actions.append(_action("transfer", f"{destination} XML {authorized_context}"))
    return _document(context, "ratekeeper-authorized", actions)


def denied_document(reason: Reason, *, context: str, detail: str = "") -> str:
    """The dialplan of a denied call: the reason as variables, then hang up with its cause."""
    actions = [
        _action("set", "rk_auth_result=DENY"),
        _action("set", f"rk_auth_reason={reason}"),
    ]
    if detail:
        actions.append(_action("set", f"rk_auth_detail={detail}"))
    if reason is Reason.INSUFFICIENT_CREDIT:
        actions.append(_action("respond", "402 Payment Required"))
    actions.append(_action("hangup", hangup_cause(reason)))
    return _document(context, "ratekeeper-denied", actions)


def decision_document(
    decision: AuthorizationDecision,
    request: AuthorizationRequest,
    *,
    context: str,
    authorized_context: str = DEFAULT_AUTHORIZED_CONTEXT,
) -> str:
    """The document for ``decision`` on ``request`` (allowed or denied)."""
    if not decision.allowed:
        return denied_document(decision.reason, context=context)
    return allowed_document(
        decision,
        context=context,
        call_ref=request.call_id,
        destination=request.callee,
        authorized_context=authorized_context,
    )
