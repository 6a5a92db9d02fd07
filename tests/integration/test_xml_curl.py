"""mod_xml_curl dialplan lookups over a real uvicorn port, answered by the real
AuthorizationService on real SQL (accounts, ledger, rate deck) and real Redis."""

from __future__ import annotations

import asyncio
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from structlog.testing import capture_logs

from balance import keys
from balance.live import LiveState
from daemon.authorization import Authorizer, Reason
from daemon.authorization_service import (
    AuthorizationService,
    reservation_key,
)
from daemon.http_authorize import (
    AuthorizeHTTPServer,
    build_authorize_app,
    serve_authorize_http,
)
from daemon.http_xml_curl import DIALPLAN_PATH, MAX_BODY_BYTES, form_fields, xml_curl_routes
from tests.support.authorization_build import build_service
from tests.support.fake_authorizer import FakeAuthorizer

GUARD = 10.0  # hang guard only
SWITCH = "fs1"
DEBIT_INTERVAL = 30
SLICE = Decimal("0.30")  # 30 s at the deck's 0.60/min, 1 s increments
EXAMPLE_DIALPLAN = (
    Path(__file__).resolve().parents[2] / "config" / "freeswitch" / "dialplan" / "ratekeeper.xml"
)
RUN = f"xc-{uuid.uuid4().hex[:10]}"  # every account of this module starts with it


def new_account() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:8]}"


def lookup(
    account: str, *, a_leg: str | None = None, destination: str = "15551234567", **extra: str
) -> dict[str, str]:
    """The fields mod_xml_curl posts for a loopback B-leg hunting context ``ratekeeper``."""
    a_leg = a_leg or str(uuid.uuid4())
    fields = {
        "hostname": "vm",
        "section": "dialplan",
        "tag_name": "",
        "key_name": "",
        "key_value": "",
        "Event-Name": "REQUEST_PARAMS",
        "Core-UUID": "23c08988-60f8-44ec-b153-f9fdbc497638",
        "FreeSWITCH-Hostname": "vm",
        "Channel-Name": f"loopback/{destination}-b",
        "Unique-ID": str(uuid.uuid4()),
        "Call-Direction": "inbound",
        "Caller-Caller-ID-Name": "Outbound Call",
        "Caller-Caller-ID-Number": "1000",
        "Caller-ANI": "1000",
        "Caller-Destination-Number": destination,
        "Caller-Context": "ratekeeper",
        "variable_accountcode": account,
        "variable_origination_uuid": a_leg,
        "variable_other_loopback_leg_uuid": a_leg,
        "variable_loopback_leg": "B",
        "Hunt-Caller-ID-Number": "1000",
        "Hunt-Destination-Number": destination,
        "Hunt-Context": "ratekeeper",
    }
    fields.update(extra)
    return fields


def encoded(fields: dict[str, str]) -> bytes:
    """URL-encoded like switch_event_build_param_string (space as %20, never '+')."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fields.items()).encode()


def answer(response: httpx.Response) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """(extension name, actions, variables set) of an xml_curl dialplan answer."""
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(response.text)
    extension = root.find("./section[@name='dialplan']/context/extension")
    assert extension is not None, response.text
    acts = [(a.get("application", ""), a.get("data", "")) for a in extension.iter("action")]
    variables = dict(data.split("=", 1) for app, data in acts if app == "set")
    return extension.get("name", ""), acts, variables


@pytest.fixture(scope="module", autouse=True)
def _delete_accounts(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    client = redis.Redis.from_url(redis_url)
    try:
        found = list(client.scan_iter(match=f"{keys.PREFIX}:{{{RUN}-*"))
        if found:
            client.delete(*found)
    finally:
        client.close()


Build = Callable[[dict[str, Decimal]], Awaitable[AuthorizationService]]
MakeClient = Callable[[AuthorizeHTTPServer], httpx.AsyncClient]


@pytest.fixture
async def service(sql_engine: AsyncEngine, redis_client: aioredis.Redis) -> AsyncIterator[Build]:
    """Provision accounts (with balances) and the deck in SQL, then build the service
    the way the daemon does: live state rebuilt from the ledger, catalog from SQL."""
    live = LiveState(redis_client, lease_ttl=60)

    async def build(balances: dict[str, Decimal]) -> AuthorizationService:
        return await build_service(sql_engine, live, balances, debit_interval=DEBIT_INTERVAL)

    try:
        yield build
    finally:
        await live.aclose()


async def serve(
    authorizer: Authorizer,
    *,
    contexts: Sequence[str] = ("ratekeeper",),
    authorized_context: str = "authorized",
    accepting: Callable[[], bool] = lambda: True,
) -> AuthorizeHTTPServer:
    routes = xml_curl_routes(
        authorizer,
        default_switch_id="fs-default",
        contexts=contexts,
        authorized_context=authorized_context,
        accepting=accepting,
    )
    server = serve_authorize_http(Starlette(routes=routes), "127.0.0.1", 0)
    await server.start()
    return server


@pytest.fixture
async def client() -> AsyncIterator[MakeClient]:
    clients: list[httpx.AsyncClient] = []
    servers: list[AuthorizeHTTPServer] = []

    def make(server: AuthorizeHTTPServer) -> httpx.AsyncClient:
        servers.append(server)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=GUARD)
        clients.append(http)
        return http

    try:
        yield make
    finally:
        for http in clients:
            await http.aclose()
        for server in servers:
            await server.stop()


async def post(
    http: httpx.AsyncClient, fields: dict[str, str], switch_id: str = SWITCH
) -> httpx.Response:
    return await http.post(
        f"{DIALPLAN_PATH}?switch_id={switch_id}",
        content=encoded(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_given_funded_account_when_b_leg_hunts_then_allow_and_reservation_on_a_leg(
    service: Build,
    client: MakeClient,
    redis_client: aioredis.Redis,
) -> None:
    account, a_leg = new_account(), str(uuid.uuid4())
    svc = await service({account: Decimal("10.00")})
    http = client(await serve(svc))
    fields = lookup(account, a_leg=a_leg)

    response = await post(http, fields)

    name, acts, variables = answer(response)
    assert name == "ratekeeper-authorized"
    assert (variables["rk_auth_result"], variables["rk_auth_reason"]) == ("ALLOW", "OK")
    assert variables["rk_call_ref"] == a_leg
    max_duration = int(variables["rk_max_duration"])
    assert max_duration == 1000  # 10.00 at 0.60/min
    limit = ("set", f"execute_on_answer=sched_hangup +{max_duration} ALLOTTED_TIMEOUT")
    assert limit in acts
    assert acts[-1] == ("transfer", "15551234567 XML authorized")
    calls = await redis_client.hgetall(keys.calls_key(account))
    assert calls == {reservation_key(SWITCH, a_leg).encode(): b"300000"}
    assert fields["Unique-ID"] not in str(calls)


async def test_given_unfunded_account_when_hunting_then_402_and_call_rejected(
    service: Build,
    client: MakeClient,
    redis_client: aioredis.Redis,
) -> None:
    account = new_account()
    svc = await service({account: Decimal(0)})
    http = client(await serve(svc))

    response = await post(http, lookup(account))

    name, acts, variables = answer(response)
    assert name == "ratekeeper-denied"
    assert (variables["rk_auth_result"], variables["rk_auth_reason"]) == (
        "DENY",
        "INSUFFICIENT_CREDIT",
    )
    assert acts[-2:] == [("respond", "402 Payment Required"), ("hangup", "CALL_REJECTED")]
    assert await redis_client.hlen(keys.calls_key(account)) == 0


async def test_given_credit_for_k_slices_when_n_lookups_at_once_then_exactly_k_allowed(
    service: Build,
    client: MakeClient,
    redis_client: aioredis.Redis,
) -> None:
    account, k, n = new_account(), 7, 24
    svc = await service({account: SLICE * k})
    http = client(await serve(svc))
    a_legs = [str(uuid.uuid4()) for _ in range(n)]

    responses = await asyncio.gather(
        *(post(http, lookup(account, a_leg=leg)) for leg in a_legs)
    )

    results = [answer(r)[2] for r in responses]
    allowed = [v["rk_call_ref"] for v in results if v["rk_auth_result"] == "ALLOW"]
    assert len(allowed) == k
    assert {v["rk_auth_reason"] for v in results if v["rk_auth_result"] == "DENY"} == {
        "INSUFFICIENT_CREDIT"
    }
    calls = await redis_client.hgetall(keys.calls_key(account))
    assert sorted(calls) == sorted(reservation_key(SWITCH, leg).encode() for leg in allowed)


@pytest.mark.parametrize(
    "change",
    [{"Hunt-Context": "default"}, {"section": "directory"}],
    ids=["other-context", "directory-section"],
)
async def test_given_lookup_not_for_ratekeeper_when_posted_then_not_found_and_no_authorization(
    client: MakeClient, change: dict[str, str]
) -> None:
    fake = FakeAuthorizer()
    http = client(await serve(fake))

    response = await post(http, lookup("tenant-a", **change))

    assert response.status_code == 200
    result = ET.fromstring(response.text).find("./section[@name='result']/result")
    assert result is not None and result.get("status") == "not found"
    assert fake.requests == []


async def test_given_listed_contexts_when_hunting_each_then_answered_in_that_context(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    fake.allow("tenant-a", 42)
    http = client(
        await serve(fake, contexts=("rk-a", "rk-b"), authorized_context="carriers")
    )

    response = await post(http, lookup("tenant-a", **{"Hunt-Context": "rk-b"}))

    root = ET.fromstring(response.text)
    context = root.find("./section/context")
    assert context is not None and context.get("name") == "rk-b"
    _, acts, _ = answer(response)
    assert acts[-1] == ("transfer", "15551234567 XML carriers")
    assert fake.requests[0].switch_id == SWITCH


async def test_given_fake_routes_when_allowed_then_bridge_with_failover(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()  # default: allow 60 s over two routes
    http = client(await serve(fake))

    _, acts, _ = answer(await post(http, lookup("tenant-a")))

    assert acts[-2:] == [
        ("set", "continue_on_fail=true"),
        ("bridge", "PJSIP/15551234567@carrier-a|PJSIP/15551234567@carrier-b"),
    ]


async def test_given_draining_daemon_when_hunting_then_temporary_failure_without_authorizing(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    accepting = False
    http = client(await serve(fake, accepting=lambda: accepting))

    _, acts, variables = answer(await post(http, lookup("tenant-a")))

    assert variables["rk_auth_reason"] == "SERVICE_UNAVAILABLE"
    assert acts[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")
    assert fake.requests == []


async def test_given_failing_authorizer_when_hunting_then_200_temporary_failure_logged(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    fake.fail("tenant-a")
    http = client(await serve(fake))
    a_leg = str(uuid.uuid4())

    with capture_logs() as logs:
        response = await post(http, lookup("tenant-a", a_leg=a_leg))

    _, acts, variables = answer(response)
    denial = ("DENY", ("hangup", "NORMAL_TEMPORARY_FAILURE"))
    assert (variables["rk_auth_result"], acts[-1]) == denial
    errors = [(e["event"], e["call_id"]) for e in logs if e["log_level"] == "error"]
    assert errors == [("authorizer failed", a_leg)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"Hunt-Destination-Number": "", "Caller-Destination-Number": ""},
            "Hunt-Destination-Number",
        ),
        ({"Hunt-Destination-Number": "1000 XML public"}, "Hunt-Destination-Number"),
        ({"variable_accountcode": ""}, "variable_accountcode"),
    ],
    ids=["no-destination", "context-injection", "no-account"],
)
async def test_given_malformed_lookup_when_posted_then_bad_request_naming_the_field(
    client: MakeClient, change: dict[str, str], field: str
) -> None:
    fake = FakeAuthorizer()
    http = client(await serve(fake))

    _, acts, variables = answer(await post(http, lookup("tenant-a", **change)))

    assert (variables["rk_auth_reason"], variables["rk_auth_detail"]) == ("BAD_REQUEST", field)
    assert acts[-1] == ("hangup", "INVALID_NUMBER_FORMAT")
    assert fake.requests == []


async def test_given_bad_switch_id_when_posted_then_bad_request_naming_switch_id(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    http = client(await serve(fake))

    _, _, variables = answer(await post(http, lookup("tenant-a"), switch_id="a%7Bb"))

    assert variables["rk_auth_detail"] == "switch_id"
    assert fake.requests == []


async def test_given_get_style_binding_when_fields_in_query_then_same_answer(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    fake.allow("tenant-a", 12)
    http = client(await serve(fake))
    a_leg = str(uuid.uuid4())
    query = encoded(lookup("tenant-a", a_leg=a_leg)).decode()

    response = await http.get(f"{DIALPLAN_PATH}?switch_id=fs9&{query}")

    _, _, variables = answer(response)
    assert (variables["rk_max_duration"], variables["rk_call_ref"]) == ("12", a_leg)
    assert (fake.requests[0].switch_id, fake.requests[0].call_id) == ("fs9", a_leg)


async def test_given_hundreds_of_fields_and_escapes_when_posted_then_wanted_fields_decoded(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    http = client(await serve(fake))
    noise = {f"variable_sip_h_X-Noise-{i}": f"v={i}&w <{i}>%" for i in range(300)}
    fields = {
        **noise,
        **lookup("tenant a+b", destination="+4930123"),
        "Caller-Caller-ID-Number": "+49 30 1",
    }

    answer(await post(http, fields))

    (request,) = fake.requests
    assert (request.account, request.callee) == ("tenant a+b", "+4930123")
    assert request.caller == "+49 30 1"


def test_given_form_when_decoding_then_only_wanted_fields_first_occurrence_wins() -> None:
    form = b"Caller-ANI=2&xCaller-ANI=9&Caller-ANI=3&a.b=%41&Unique-ID=u%2B1+x&Other=%FF"

    fields = form_fields(form, frozenset({b"Caller-ANI", b"Unique-ID", b"a.b", b"Missing"}))

    assert fields == {"Caller-ANI": "2", "a.b": "A", "Unique-ID": "u+1 x"}


def test_given_wanted_names_prefixing_each_other_when_decoding_then_each_exact() -> None:
    form = b"ab=1&abd=0&a=2&abc=3&b=&ab=9&a"

    fields = form_fields(form, frozenset({b"a", b"ab", b"abc", b"b"}))

    assert fields == {"ab": "1", "a": "2", "abc": "3", "b": ""}


async def test_given_body_over_the_limit_when_posted_then_413(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    http = client(await serve(fake))

    response = await http.post(
        f"{DIALPLAN_PATH}?switch_id={SWITCH}",
        content=encoded(lookup("tenant-a")) + b"&pad=" + b"x" * MAX_BODY_BYTES,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 413
    assert fake.requests == []


def curl_example() -> tuple[str, dict[str, list[str]]]:
    """The curl URL of the example ``ratekeeper-curl`` context and each extension's
    condition expressions."""
    root = ET.parse(EXAMPLE_DIALPLAN).getroot()
    context = root.find("./context[@name='ratekeeper-curl']")
    assert context is not None
    (curl,) = (a for a in context.iter("action") if a.get("application") == "curl")
    expressions = {
        ext.get("name", ""): [c.get("expression", "") for c in ext.iter("condition")]
        for ext in context.iter("extension")
    }
    return curl.get("data", ""), expressions


async def test_given_example_curl_dialplan_when_authorize_answers_text_then_conditions_match(
    client: MakeClient,
) -> None:
    fake = FakeAuthorizer()
    fake.allow("tenant-a", 42)
    fake.deny("tenant-b", Reason.INSUFFICIENT_CREDIT)
    app = build_authorize_app(fake, default_switch_id="fs-default")
    server = serve_authorize_http(app, "127.0.0.1", 0)
    await server.start()
    http = client(server)
    url, expressions = curl_example()
    # the query the example sends, with FreeSWITCH's ${...} expanded to sample values
    sample = {"caller": "1000", "callee": "15551234567", "call_id": "a-leg"}
    query = dict(parse_qsl(urlsplit(url).query))
    assert set(query) == {"format", "switch_id", "account", *sample}

    async def authorize_text(account: str) -> str:
        params = {**query, **sample, "account": account}
        response = await http.get(urlsplit(url).path, params=params)
        return response.text

    allowed, denied = await authorize_text("tenant-a"), await authorize_text("tenant-b")

    ok_check, maxsecs = expressions["rk-allowed"]
    (reason,) = expressions["rk-denied"]
    assert re.search(ok_check, allowed) and not re.search(ok_check, denied)
    limit, refused = re.search(maxsecs, allowed), re.search(reason, denied)
    assert limit is not None and limit.group(1) == "42"
    assert refused is not None and refused.group(1) == "INSUFFICIENT_CREDIT"
    assert (fake.requests[0].switch_id, fake.requests[0].call_id) == ("fs1", "a-leg")
