"""FreeSWITCH xml_curl dialplan: documents rendered from decisions, requests read from fields."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason, Route
from daemon.freeswitch_dialplan import (
    HANGUP_CAUSES,
    NOT_FOUND_DOCUMENT,
    BadDialplanRequest,
    allowed_document,
    decision_document,
    denied_document,
    dialplan_request,
    hangup_cause,
    is_authorization_lookup,
)

A_LEG = "20352715-df89-48e0-9034-ce15e3167544"  # park_authorize.esl, the billing leg
B_LEG = "7ed8aa0c-658a-4e6b-98a4-1c5ccf059134"  # its loopback B-leg, running the dialplan

# The contract's table, written out (not derived from HANGUP_CAUSES, so it can fail).
EXPECTED_CAUSES = {
    Reason.INSUFFICIENT_CREDIT: "CALL_REJECTED",
    Reason.CONCURRENCY_LIMIT: "NORMAL_CIRCUIT_CONGESTION",
    Reason.CPS_LIMIT: "NORMAL_CIRCUIT_CONGESTION",
    Reason.NO_RATE: "NO_ROUTE_DESTINATION",
    Reason.UNKNOWN_ACCOUNT: "CALL_REJECTED",
    Reason.ACCOUNT_SUSPENDED: "CALL_REJECTED",
    Reason.TRIAL_EXPIRED: "CALL_REJECTED",
    Reason.TRIAL_RESTRICTED: "OUTGOING_CALL_BARRED",
    Reason.MARGIN_GUARD: "CALL_REJECTED",
    Reason.BAD_REQUEST: "INVALID_NUMBER_FORMAT",
    Reason.SERVICE_UNAVAILABLE: "NORMAL_TEMPORARY_FAILURE",
    Reason.SEAT_LIMIT: "NORMAL_CIRCUIT_CONGESTION",
}


def actions(document: str) -> list[tuple[str, str]]:
    """(application, data) of every action, checking the document's frame on the way."""
    root = ET.fromstring(document)
    assert (root.tag, root.get("type")) == ("document", "freeswitch/xml")
    (section,) = root.findall("section")
    assert section.get("name") == "dialplan"
    (condition,) = root.findall("./section/context/extension/condition")
    assert (condition.get("field"), condition.get("expression")) == ("destination_number", "^(.*)$")
    assert all(child.tag == "action" for child in condition)
    return [(a.get("application", ""), a.get("data", "")) for a in condition]


def attribute(document: str, path: str, name: str) -> str | None:
    element = ET.fromstring(document).find(path)
    assert element is not None, path
    return element.get(name)


def variables(document: str) -> dict[str, str]:
    return dict(d.split("=", 1) for app, d in actions(document) if app == "set")


def route(carrier: str, dial_string: str) -> Route:
    return Route(carrier=carrier, dial_string=dial_string, buy_rate=Decimal("0.0042"))


def esl_channel_create(path: Path, unique_id: str) -> dict[str, str]:
    """The decoded headers of one channel's CHANNEL_CREATE in a recorded ESL stream."""
    data, pos = path.read_bytes(), 0
    while (end := data.find(b"\n\n", pos)) >= 0:
        head = dict(line.split(": ", 1) for line in data[pos:end].decode().split("\n"))
        length = int(head.get("Content-Length", "0"))
        body, pos = data[end + 2 : end + 2 + length], end + 2 + length
        if head.get("Content-Type") != "text/event-plain":
            continue
        event: dict[str, str] = {}
        for line in body.decode().split("\n"):
            if ": " in line:
                name, value = line.split(": ", 1)
                event.setdefault(name, unquote(value))
        if event.get("Event-Name") == "CHANNEL_CREATE" and event["Unique-ID"] == unique_id:
            return event
    raise LookupError(unique_id)


def lookup_fields(channel: dict[str, str], **overrides: str) -> dict[str, str]:
    """What mod_xml_curl posts for a dialplan hunt of ``channel`` (Hunt-* = its profile)."""
    hunt = {"Hunt-" + k[len("Caller-") :]: v for k, v in channel.items() if k.startswith("Caller-")}
    return {"section": "dialplan", **channel, **hunt, **overrides}


B_LEG_FIELDS = {
    "section": "dialplan",
    "Hunt-Context": "ratekeeper",
    "Hunt-Destination-Number": "15551234567",
    "Caller-Caller-ID-Number": "1000",
    "Caller-ANI": "1000",
    "Unique-ID": B_LEG,
    "variable_accountcode": "tenant-a",
    "variable_loopback_leg": "B",
    "variable_other_loopback_leg_uuid": A_LEG,
}


# ---- allowed ------------------------------------------------------------------------


def test_given_allowed_without_routes_when_rendered_then_limits_then_transfer() -> None:
    decision = AuthorizationDecision(allowed=True, reason=Reason.OK, max_usage=95)

    document = allowed_document(
        decision, context="ratekeeper", call_ref=A_LEG, destination="15551234567"
    )

    assert actions(document) == [
        ("set", "rk_auth_result=ALLOW"),
        ("set", "rk_auth_reason=OK"),
        ("set", "rk_max_duration=95"),
        ("set", f"rk_call_ref={A_LEG}"),
        ("set", "execute_on_answer=sched_hangup +95 ALLOTTED_TIMEOUT"),
        ("transfer", "15551234567 XML authorized"),
    ]
    assert attribute(document, "./section/context", "name") == "ratekeeper"
    assert attribute(document, "./section/context/extension", "name") == "ratekeeper-authorized"


def test_given_allowed_with_routes_when_rendered_then_bridge_in_lcr_order_with_failover() -> None:
    decision = AuthorizationDecision(
        allowed=True,
        reason=Reason.OK,
        max_usage=30,
        routes=(
            route("cheap", "sofia/gateway/cheap/15551234567"),
            route("backup", "sofia/gateway/backup/15551234567"),
            route("last", "sofia/gateway/last/15551234567"),
        ),
    )

    document = allowed_document(
        decision, context="rk-out", call_ref=A_LEG, destination="15551234567"
    )

    assert actions(document)[4:] == [
        ("set", "execute_on_answer=sched_hangup +30 ALLOTTED_TIMEOUT"),
        ("set", "continue_on_fail=true"),
        (
            "bridge",
            "sofia/gateway/cheap/15551234567|sofia/gateway/backup/15551234567"
            "|sofia/gateway/last/15551234567",
        ),
    ]
    assert attribute(document, "./section/context", "name") == "rk-out"


def test_given_custom_authorized_context_when_no_routes_then_transfer_there() -> None:
    request = AuthorizationRequest("fs1", A_LEG, "tenant-a", "1000", "4102")
    decision = AuthorizationDecision(allowed=True, reason=Reason.OK, max_usage=10)

    document = decision_document(
        decision, request, context="ratekeeper", authorized_context="carriers"
    )

    assert actions(document)[-1] == ("transfer", "4102 XML carriers")
    assert variables(document)["rk_call_ref"] == A_LEG


# ---- denied -------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.OK], ids=str)
def test_given_each_denial_when_rendered_then_reason_set_and_hangup_with_its_cause(
    reason: Reason,
) -> None:
    document = denied_document(reason, context="ratekeeper")

    expected = [("set", "rk_auth_result=DENY"), ("set", f"rk_auth_reason={reason}")]
    if reason is Reason.INSUFFICIENT_CREDIT:
        expected.append(("respond", "402 Payment Required"))
    expected.append(("hangup", EXPECTED_CAUSES[reason]))
    assert actions(document) == expected
    assert attribute(document, "./section/context/extension", "name") == "ratekeeper-denied"


def test_given_every_denial_reason_then_it_has_a_hangup_cause_and_ok_has_none() -> None:
    assert HANGUP_CAUSES == EXPECTED_CAUSES
    assert all(hangup_cause(reason) == cause for reason, cause in EXPECTED_CAUSES.items())
    assert Reason.OK not in HANGUP_CAUSES


def test_given_denied_decision_when_decision_document_then_denied_document() -> None:
    request = AuthorizationRequest("fs1", A_LEG, "tenant-b", "2000", "19005550199")

    document = decision_document(AuthorizationDecision.deny(Reason.NO_RATE), request, context="rk")

    assert actions(document)[-1] == ("hangup", "NO_ROUTE_DESTINATION")
    assert "rk_call_ref" not in variables(document)


def test_given_bad_request_detail_when_rendered_then_detail_names_the_field() -> None:
    document = denied_document(
        Reason.BAD_REQUEST, context="ratekeeper", detail="Hunt-Destination-Number"
    )

    assert actions(document) == [
        ("set", "rk_auth_result=DENY"),
        ("set", "rk_auth_reason=BAD_REQUEST"),
        ("set", "rk_auth_detail=Hunt-Destination-Number"),
        ("hangup", "INVALID_NUMBER_FORMAT"),
    ]


def test_given_not_found_then_the_contract_document() -> None:
    assert NOT_FOUND_DOCUMENT == (
        '<document type="freeswitch/xml"><section name="result">'
        '<result status="not found"/></section></document>'
    )
    assert attribute(NOT_FOUND_DOCUMENT, "./section/result", "status") == "not found"


# ---- escaping -----------------------------------------------------------------------


def test_given_markup_in_values_when_rendered_then_no_action_is_injected() -> None:
    evil = '1000"/><action application="bridge" data="sofia/gateway/free/1000'
    decision = AuthorizationDecision(
        allowed=True,
        reason=Reason.OK,
        max_usage=5,
        routes=(route("x", "sofia/gw/a&b/<1>'q'\"z\""),),
    )

    allowed = allowed_document(
        decision, context="ratekeeper", call_ref=evil, destination=evil, authorized_context=evil
    )
    transferred = allowed_document(
        AuthorizationDecision(allowed=True, reason=Reason.OK, max_usage=5),
        context="ratekeeper",
        call_ref="u",
        destination=evil,
        authorized_context="authorized",
    )
    denied = denied_document(Reason.BAD_REQUEST, context='a"b<c>', detail=evil)

    assert [app for app, _ in actions(allowed)] == [
        *["set"] * 6,
        "bridge",
    ]
    assert variables(allowed)["rk_call_ref"] == evil
    assert actions(allowed)[-1] == ("bridge", "sofia/gw/a&b/<1>'q'\"z\"")
    assert actions(transferred)[-1] == ("transfer", f"{evil} XML authorized")
    assert len(actions(transferred)) == 6
    assert variables(denied)["rk_auth_detail"] == evil
    assert attribute(denied, "./section/context", "name") == 'a"b<c>'


# ---- request fields -----------------------------------------------------------------


def test_given_loopback_b_leg_when_read_then_call_id_is_the_a_leg() -> None:
    request = dialplan_request(B_LEG_FIELDS, "fs1")

    assert request == AuthorizationRequest(
        switch_id="fs1",
        call_id=A_LEG,
        account="tenant-a",
        caller="1000",
        callee="15551234567",
    )


def test_given_recorded_b_leg_channel_when_read_then_billing_leg_and_fields_match(
    fixtures_dir: Path,
) -> None:
    channel = esl_channel_create(fixtures_dir / "freeswitch" / "park_authorize.esl", B_LEG)
    fields = lookup_fields(channel, **{"Hunt-Context": "ratekeeper"})

    request = dialplan_request(fields, "fs1")

    assert is_authorization_lookup(fields, ["ratekeeper"])
    assert request == AuthorizationRequest("fs1", A_LEG, "tenant-a", "1000", "15551234567")


def test_given_own_leg_when_read_then_call_id_is_its_unique_id() -> None:
    fields = {**B_LEG_FIELDS, "variable_loopback_leg": "", "Unique-ID": "sip-leg-1"}

    request = dialplan_request(fields, "fs1")

    assert isinstance(request, AuthorizationRequest) and request.call_id == "sip-leg-1"


def test_given_fallback_fields_when_read_then_rk_account_caller_context_and_ani_used() -> None:
    fields = {
        "section": "dialplan",
        "Caller-Context": "ratekeeper",
        "Caller-Destination-Number": "+4930123",
        "Caller-ANI": "2000",
        "Unique-ID": "u-1",
        "variable_rk_account": "tenant-b",
    }

    request = dialplan_request(fields, "fs2")

    assert request == AuthorizationRequest("fs2", "u-1", "tenant-b", "2000", "+4930123")
    assert is_authorization_lookup(fields, ["ratekeeper"])


def test_given_hunt_and_caller_fields_when_read_then_hunt_wins() -> None:
    fields = {
        **B_LEG_FIELDS,
        "Caller-Context": "default",
        "Caller-Destination-Number": "1000",
        "Hunt-Context": "ratekeeper",
        "Hunt-Destination-Number": "4102",
    }

    request = dialplan_request(fields, "fs1")

    assert is_authorization_lookup(fields, ["ratekeeper"])
    assert isinstance(request, AuthorizationRequest) and request.callee == "4102"


@pytest.mark.parametrize(
    ("fields", "contexts"),
    [
        ({**B_LEG_FIELDS, "Hunt-Context": "default"}, ["ratekeeper"]),
        ({**B_LEG_FIELDS, "section": "directory"}, ["ratekeeper"]),
        ({**B_LEG_FIELDS, "section": "configuration"}, ["ratekeeper"]),
        ({k: v for k, v in B_LEG_FIELDS.items() if k != "section"}, ["ratekeeper"]),
        (B_LEG_FIELDS, ["other", "another"]),
        ({**B_LEG_FIELDS, "Hunt-Context": "", "Caller-Context": ""}, ["ratekeeper"]),
    ],
    ids=["other-context", "directory", "configuration", "no-section", "not-listed", "none"],
)
def test_given_other_context_or_section_when_checked_then_not_an_authorization_lookup(
    fields: dict[str, str], contexts: list[str]
) -> None:
    assert not is_authorization_lookup(fields, contexts)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"Hunt-Destination-Number": ""}, "Hunt-Destination-Number"),
        ({"Hunt-Destination-Number": "1000 XML public"}, "Hunt-Destination-Number"),
        ({"Hunt-Destination-Number": "${system(reboot)}"}, "Hunt-Destination-Number"),
        ({"Hunt-Destination-Number": '1000"/><action'}, "Hunt-Destination-Number"),
        ({"Hunt-Destination-Number": "1" * 300}, "Hunt-Destination-Number"),
        (
            {"Hunt-Destination-Number": "", "Caller-Destination-Number": "1|2"},
            "Caller-Destination-Number",
        ),
        ({"variable_accountcode": ""}, "variable_accountcode"),
        ({"variable_accountcode": "tenant\na"}, "variable_accountcode"),
        ({"Caller-Caller-ID-Number": "10\x0000"}, "Caller-Caller-ID-Number"),
        ({"variable_other_loopback_leg_uuid": "${uuid}"}, "variable_other_loopback_leg_uuid"),
        ({"variable_loopback_leg": "", "Unique-ID": ""}, "Unique-ID"),
    ],
    ids=[
        "no-destination",
        "space",
        "expansion",
        "markup",
        "too-long",
        "pipe-caller-destination",
        "no-account",
        "account-newline",
        "caller-nul",
        "call-ref-expansion",
        "no-uuid",
    ],
)
def test_given_malformed_field_when_read_then_bad_request_naming_it(
    change: dict[str, str], field: str
) -> None:
    result = dialplan_request({**B_LEG_FIELDS, **change}, "fs1")

    assert isinstance(result, BadDialplanRequest)
    assert (result.field, result.code) == (field, "BAD_REQUEST")


# ---- the example configuration ----------------------------------------------------------

CONFIG = Path(__file__).resolve().parents[2] / "config" / "freeswitch"


def test_given_example_xml_curl_binding_then_it_posts_dialplan_lookups_to_the_endpoint() -> None:
    from daemon.http_xml_curl import DIALPLAN_PATH
    from daemon.settings import AuthorizationSettings

    root = ET.parse(CONFIG / "xml_curl.conf.xml").getroot()
    params = {p.get("name"): p for p in root.iterfind("./bindings/binding/param")}

    url = urlsplit(params["gateway-url"].get("value", ""))
    assert params["gateway-url"].get("bindings") == "dialplan"
    assert (url.path, url.port) == (DIALPLAN_PATH, AuthorizationSettings().http_port)
    assert parse_qs(url.query) == {"switch_id": ["fs1"]}
    assert int(params["timeout"].get("value", "0")) > 4  # longer than the daemon's 4 s
    assert params["disable-100-continue"].get("value") == "true"


def test_given_example_dialplan_then_the_three_entry_contexts_and_authorized_exist() -> None:
    root = ET.parse(CONFIG / "dialplan" / "ratekeeper.xml").getroot()
    contexts = {c.get("name"): c for c in root.iterfind("context")}

    assert set(contexts) == {"ratekeeper", "authorized", "ratekeeper-curl", "authhold"}
    fallback_actions = contexts["ratekeeper"].iter("action")
    fallback = [(a.get("application"), a.get("data")) for a in fallback_actions]
    assert fallback[-1] == ("hangup", hangup_cause(Reason.SERVICE_UNAVAILABLE))
    held = [a.get("application") for a in contexts["authhold"].iter("action")]
    assert held[-1] == "park"
