"""HTTP authorization endpoint served by a real uvicorn on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute
from structlog.testing import capture_logs

from daemon.authorization import AuthorizationRequest, Reason, Route
from daemon.http_authorize import (
    MAX_BODY_BYTES,
    AuthorizeHTTPServer,
    build_authorize_app,
    serve_authorize_http,
)
from tests.support.fake_authorizer import FakeAuthorizer
from tests.support.http_servers import served

GUARD = 10.0  # hang guard only
PARAMS = {"account": "tenant-a", "caller": "15550001001", "callee": "15551230007"}


def params(**extra: str) -> dict[str, str]:
    return {**PARAMS, "call_id": "1795630738.63", **extra}


def text_lines(body: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in body.splitlines())


@pytest.fixture
def fake() -> FakeAuthorizer:
    return FakeAuthorizer()


@pytest.fixture
async def server(fake: FakeAuthorizer) -> AsyncIterator[AuthorizeHTTPServer]:
    async with served(build_authorize_app(fake, default_switch_id="pbx-test")) as http_server:
        yield http_server


@pytest.fixture
async def client(server: AuthorizeHTTPServer) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=GUARD) as http_client:
        yield http_client


async def test_given_allowed_account_when_get_then_json_with_decimal_strings(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    response = await client.get("/v1/authorize", params=params())

    assert response.status_code == 200
    body = response.json()
    assert (body["allowed"], body["result"], body["reason"]) == (True, "ALLOW", "OK")
    assert (body["max_usage"], body["max_usage_ms"]) == (60, 60000)
    assert body["routes"][0] == {
        "carrier": "carrier-a",
        "dial_string": "PJSIP/15551230007@carrier-a",
        "buy_rate": "0.0042",
    }
    assert body["rate"] == "0.0100"
    assert (body["call_id"], body["switch_id"]) == ("1795630738.63", "pbx-test")
    assert fake.requests == [
        AuthorizationRequest(
            switch_id="pbx-test",
            call_id="1795630738.63",
            account="tenant-a",
            caller="15550001001",
            callee="15551230007",
        )
    ]


async def test_given_form_post_like_asterisk_curl_when_text_then_key_value_lines(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    fake.allow("tenant-a", 4)

    response = await client.post("/v1/authorize?format=text", data=params(switch_id="pbx1"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == (
        "result=ALLOW\nreason=OK\nmaxsecs=4\nmaxms=4000\nroutes=\nroute_count=0\n"
    )
    assert fake.requests[0].switch_id == "pbx1"


async def test_given_json_post_when_accept_text_plain_then_text_lines(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    response = await client.post(
        "/v1/authorize", json=params(switch_id="pbx2"), headers={"Accept": "text/plain"}
    )

    lines = text_lines(response.text)
    assert lines["result"] == "ALLOW"
    assert lines["routes"] == "PJSIP/15551230007@carrier-a&PJSIP/15551230007@carrier-b"
    assert lines["route_2"] == "PJSIP/15551230007@carrier-b"
    assert fake.requests[0].switch_id == "pbx2"


async def test_given_hash_format_when_allowed_then_one_urlencoded_query_string(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/authorize", params=params(format="hash"))

    assert "\n" not in response.text
    decoded = dict(parse_qsl(response.text, keep_blank_values=True))
    assert decoded["result"] == "ALLOW"
    assert decoded["routes"] == "PJSIP/15551230007@carrier-a&PJSIP/15551230007@carrier-b"
    assert decoded["maxms"] == "60000"


async def test_given_no_credit_when_authorizing_then_denied_in_json_and_text(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    fake.deny("tenant-a", Reason.INSUFFICIENT_CREDIT)

    as_json = (await client.get("/v1/authorize", params=params())).json()
    as_text = text_lines((await client.get("/v1/authorize", params=params(format="text"))).text)

    assert (as_json["allowed"], as_json["reason"], as_json["max_usage"]) == (
        False,
        "INSUFFICIENT_CREDIT",
        0,
    )
    assert as_json["routes"] == []
    assert as_text == {
        "result": "DENY",
        "reason": "INSUFFICIENT_CREDIT",
        "maxsecs": "",
        "maxms": "",
        "routes": "",
        "route_count": "0",
    }


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"params": {"callee": "1", "call_id": "2"}}, "account"),
        ({"params": {"account": "a", "call_id": "2"}}, "callee"),
        ({"params": {"account": "a", "callee": "1"}}, "call_id"),
        ({"params": {**PARAMS, "call_id": "1", "format": "xml"}}, "format"),
        ({"params": {**PARAMS, "call_id": "1\n2"}}, "call_id"),
        ({"params": {**PARAMS, "call_id": "x" * 300}}, "call_id"),
    ],
    ids=["no-account", "no-callee", "no-call-id", "bad-format", "control-char", "too-long"],
)
async def test_given_bad_query_when_get_then_400_naming_the_field(
    client: httpx.AsyncClient, fake: FakeAuthorizer, request_kwargs: dict[str, object], field: str
) -> None:
    response = await client.get("/v1/authorize", **request_kwargs)  # type: ignore[arg-type]

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"] == "BAD_REQUEST"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("content", "content_type", "field"),
    [
        (b"{not json", "application/json", "body"),
        (b"[1, 2]", "application/json", "body"),
        (b'{"account": 1.5, "callee": "1", "call_id": "2"}', "application/json", "account"),
        (b"<xml/>", "application/xml", "body"),
    ],
    ids=["invalid-json", "json-array", "float-account", "xml"],
)
async def test_given_bad_body_when_post_then_400_naming_the_field(
    client: httpx.AsyncClient, content: bytes, content_type: str, field: str
) -> None:
    response = await client.post(
        "/v1/authorize", content=content, headers={"Content-Type": content_type}
    )

    assert (response.status_code, response.json()["field"]) == (400, field)


async def test_given_bad_request_in_text_mode_when_get_then_deny_bad_request(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/authorize", params={"format": "text", "callee": "1"})

    assert response.status_code == 400
    lines = text_lines(response.text)
    assert (lines["result"], lines["reason"], lines["field"]) == ("DENY", "BAD_REQUEST", "account")


async def test_given_failing_authorizer_when_authorizing_then_503_service_unavailable(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    fake.fail("tenant-a")

    with capture_logs() as logs:
        response = await client.get("/v1/authorize", params=params())

    assert response.status_code == 503
    assert (response.json()["allowed"], response.json()["reason"]) == (
        False,
        "SERVICE_UNAVAILABLE",
    )
    errors = [(e["event"], e["call_id"]) for e in logs if e["log_level"] == "error"]
    assert errors == [("authorizer failed", "1795630738.63")]


async def test_given_running_server_when_health_then_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_given_request_in_flight_when_stopping_then_it_completes_and_port_closes(
    fake: FakeAuthorizer,
) -> None:
    sigterm_before = signal.getsignal(signal.SIGTERM)
    http_server = serve_authorize_http(build_authorize_app(fake, default_switch_id="x"), port=0)
    await http_server.start()
    installed_during = signal.getsignal(signal.SIGTERM)
    gate = fake.block("tenant-a")
    base = f"http://127.0.0.1:{http_server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=GUARD) as http_client:
        in_flight = asyncio.create_task(http_client.get("/v1/authorize", params=params()))
        await asyncio.wait_for(fake.entered.wait(), GUARD)
        stopping = asyncio.create_task(http_server.stop())
        await asyncio.sleep(0)
        gate.set()
        response = await asyncio.wait_for(in_flight, GUARD)
        await asyncio.wait_for(stopping, GUARD)
        with pytest.raises(httpx.ConnectError):
            await http_client.get("/health", headers={"Connection": "close"})

    assert response.status_code == 200 and response.json()["allowed"] is True
    assert installed_during is sigterm_before


async def test_given_keepalive_connection_when_served_then_tcp_nodelay_is_set(
    server: AuthorizeHTTPServer, client: httpx.AsyncClient
) -> None:
    await client.get("/health")  # opens the kept-alive connection

    sockets = [c.transport.get_extra_info("socket") for c in server.server_state.connections]

    # without it every keep-alive answer waits ~40 ms for the client's delayed ACK
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


async def test_given_route_strings_needing_escapes_when_json_then_they_round_trip(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    odd = Route(carrier='c"1', dial_string='PJSIP/1@x"\\é\n', buy_rate=Decimal("1E-7"))
    fake.allow("tenant-a", 5, routes=(odd,))

    response = await client.get("/v1/authorize", params=params(call_id='id"\\ü'))

    body = response.json()
    assert body["routes"] == [
        {"carrier": 'c"1', "dial_string": 'PJSIP/1@x"\\é\n', "buy_rate": "0.0000001"}
    ]
    assert (body["call_id"], body["max_usage_ms"], body["rate"]) == ('id"\\ü', 5000, None)


async def test_given_authorizer_not_accepting_when_authorizing_then_503_service_unavailable(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    fake.deny("tenant-a", Reason.SERVICE_UNAVAILABLE)  # what a draining daemon answers

    as_json = await client.get("/v1/authorize", params=params())
    as_text = await client.get("/v1/authorize", params=params(format="text"))

    assert (as_json.status_code, as_json.json()["reason"]) == (503, "SERVICE_UNAVAILABLE")
    assert as_text.status_code == 503
    assert text_lines(as_text.text)["result"] == "DENY"


async def test_given_other_method_or_oversized_body_when_authorizing_then_refused(
    client: httpx.AsyncClient, fake: FakeAuthorizer
) -> None:
    put = await client.put("/v1/authorize", params=params())
    big = await client.post(
        "/v1/authorize",
        content=b"account=" + b"a" * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert put.status_code == 405
    assert (big.status_code, big.json()["field"]) == (400, "body")
    assert fake.requests == []


async def test_given_extra_routes_when_built_then_served_beside_authorize(
    fake: FakeAuthorizer,
) -> None:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello " + request.query_params.get("who", ""))

    app = build_authorize_app(
        fake, default_switch_id="x", extra_routes=[StarletteRoute("/v1/hello", hello)]
    )
    http_server = serve_authorize_http(app, "127.0.0.1", 0)
    await http_server.start()
    try:
        base = f"http://127.0.0.1:{http_server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=GUARD) as http_client:
            hello_answer = await http_client.get("/v1/hello", params={"who": "fs"})
            authorized = await http_client.get("/v1/authorize", params=params())
            missing = await http_client.get("/v1/nothing")
    finally:
        await http_server.stop()

    assert (hello_answer.status_code, hello_answer.text) == (200, "hello fs")
    assert authorized.json()["allowed"] is True
    assert missing.status_code == 404


async def test_given_many_requests_on_one_connection_when_pipelined_then_answered_in_order(
    server: AuthorizeHTTPServer, fake: FakeAuthorizer
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    ids = [f"call-{n}" for n in range(5)]
    writer.write(
        b"".join(
            f"GET /v1/authorize?account=tenant-a&callee=15551230007&call_id={i}&format=text "
            "HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            for i in ids
        )
    )
    answers = []
    for _ in ids:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answers.append(await reader.readexactly(length))
    writer.close()

    assert all(text_lines(a.decode())["result"] == "ALLOW" for a in answers)
    assert [r.call_id for r in fake.requests] == ids


async def test_given_authorizer_slower_than_timeout_when_authorizing_then_503_fail_closed(
    fake: FakeAuthorizer,
) -> None:
    gate = fake.block("tenant-a")
    app = build_authorize_app(fake, default_switch_id="x", authorize_timeout=0.2)
    http_server = serve_authorize_http(app, "127.0.0.1", 0)
    await http_server.start()
    try:
        base = f"http://127.0.0.1:{http_server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=GUARD) as http_client:
            with capture_logs() as logs:
                response = await http_client.get("/v1/authorize", params=params())
            gate.set()
            after = await http_client.get("/v1/authorize", params=params())
    finally:
        await http_server.stop()

    assert (response.status_code, response.json()["reason"]) == (503, "SERVICE_UNAVAILABLE")
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["authorizer failed"]
    assert after.json()["allowed"] is True
