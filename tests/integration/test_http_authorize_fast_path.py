"""The HTTP protocol's fast path for a switch's plain ``GET /v1/authorize`` (real uvicorn,
raw TCP): taken only for such requests, the same answers as the ASGI way, and what
uvicorn does for a connection kept (pipelining in order, ``Connection: close``, a client
that goes away, a GET with a body). Every test runs with the answer written by a task
and from the authorizer's callbacks (``decide_soon``), the common call's way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from daemon.http_authorize import AuthorizeApp, AuthorizeHTTPServer, build_authorize_app
from tests.support.fake_authorizer import FakeAuthorizer
from tests.support.http_servers import served

GUARD = 10.0  # hang guard only
PLAIN = "/v1/authorize?account=tenant-a&caller=1000&callee=15551230007&call_id=c-1"
ESCAPED = "/v1/authorize?account=tenant%2Da&caller=1000&callee=15551230007&call_id=c-1"


class CountingApp(AuthorizeApp):
    """The daemon's app, counting the requests that reach it over ASGI."""

    asgi_requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.asgi_requests += 1
        await super().__call__(scope, receive, send)


@pytest.fixture(params=[False, True], ids=["task", "callback"])
def fake(request: pytest.FixtureRequest) -> FakeAuthorizer:
    return FakeAuthorizer(soon=request.param)


@pytest.fixture
def app(fake: FakeAuthorizer) -> CountingApp:
    built = build_authorize_app(fake, default_switch_id="pbx-test")
    return CountingApp(built.authorize_endpoint, built.routes)


@pytest.fixture
async def server(app: CountingApp) -> AsyncIterator[AuthorizeHTTPServer]:
    async with served(app) as http_server:
        yield http_server


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    return "\r\n".join([f"GET {path} HTTP/{version}", "Host: x", *headers, "", ""]).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, headers (lower-case names) and body of one answer."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    status, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), GUARD)
    return status, headers, body


async def exchange(port: int, *requests: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Send ``requests`` in one write (pipelined) and read one answer for each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(requests))
        return [await read_answer(reader) for _ in requests]
    finally:
        writer.close()


async def test_given_plain_get_when_authorizing_then_answered_without_asgi_as_asgi_would(
    server: AuthorizeHTTPServer, app: CountingApp, fake: FakeAuthorizer
) -> None:
    [(fast_status, fast_headers, fast_body)] = await exchange(server.port, get(PLAIN))
    assert app.asgi_requests == 0
    [(slow_status, slow_headers, slow_body)] = await exchange(server.port, get(ESCAPED))
    assert app.asgi_requests == 1

    assert fast_status == slow_status == b"HTTP/1.1 200 OK"
    assert fast_body == slow_body and b'"allowed":true' in fast_body
    assert (
        fast_headers.keys()
        == slow_headers.keys()
        == {
            b"date",
            b"content-type",
            b"content-length",
        }
    )
    assert fast_headers[b"content-type"] == slow_headers[b"content-type"]
    assert fake.requests[0] == fake.requests[1]
    assert fake.decided_soon == (1 if fake.soon else 0)  # the fast one, by its lane


async def test_given_requests_the_fast_path_does_not_take_when_sent_then_asgi_answers(
    server: AuthorizeHTTPServer, app: CountingApp
) -> None:
    answers = await exchange(
        server.port,
        get(PLAIN + "&format=text"),
        get(PLAIN, "Accept: text/plain"),
        get(PLAIN.replace("c-1", "c-1#frag")),
        get("/v1/authorize?account=tenant-a&call_id=c-1"),  # no callee: refused, named
        get("/health"),
    )
    closing = await exchange(server.port, get(PLAIN, version="1.0"))

    assert app.asgi_requests == 6
    assert [status for status, _h, _b in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 200 OK",
    ]
    assert answers[0][2].startswith(b"result=ALLOW\n") and answers[1][2] == answers[0][2]
    assert b'"field":"callee"' in answers[3][2]
    assert b'"allowed":true' in closing[0][2]


async def test_given_fast_and_asgi_requests_pipelined_when_sent_then_answered_in_order(
    server: AuthorizeHTTPServer, app: CountingApp, fake: FakeAuthorizer
) -> None:
    gate = fake.block("slow")  # the first answer waits: the rest queue behind it
    order = ["slow", "tenant-a", "text", "tenant-b", "health"]
    requests = [
        get(PLAIN.replace("tenant-a", "slow")),
        get(PLAIN),
        get(PLAIN.replace("tenant-a", "text") + "&format=text"),
        get(PLAIN.replace("tenant-a", "tenant-b")),
        get("/health"),
    ]
    answering = asyncio.create_task(exchange(server.port, *requests))
    await asyncio.wait_for(fake.entered.wait(), GUARD)
    gate.set()
    answers = await answering

    assert [r.account for r in fake.requests] == order[:4]
    assert [b"text" if body.startswith(b"result=") else body[:12] for _s, _h, body in answers] == [
        b'{"allowed":t',
        b'{"allowed":t',
        b"text",
        b'{"allowed":t',
        b'{"status":"o',
    ]
    assert [b'"account"' not in body for _s, _h, body in answers] == [True] * 5
    assert app.asgi_requests == 2


async def test_given_connection_close_when_fast_answer_then_said_and_connection_closed(
    server: AuthorizeHTTPServer, app: CountingApp
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get(PLAIN, "Connection: close"))
    status, headers, body = await read_answer(reader)
    rest = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()

    assert (status, headers[b"connection"], rest) == (b"HTTP/1.1 200 OK", b"close", b"")
    assert b'"allowed":true' in body and app.asgi_requests == 0


async def test_given_get_with_a_body_when_fast_answer_then_next_request_still_read(
    server: AuthorizeHTTPServer, app: CountingApp
) -> None:
    with_body = get(PLAIN, "Content-Length: 5") + b"hello"
    answers = await exchange(server.port, with_body, get(PLAIN.replace("c-1", "c-2")))

    assert [status for status, _h, _b in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert b'"call_id":"c-2"' in answers[1][2] and app.asgi_requests == 0


async def test_given_client_gone_while_authorizing_when_answer_ready_then_server_goes_on(
    server: AuthorizeHTTPServer, fake: FakeAuthorizer
) -> None:
    gate = fake.block("tenant-a")
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get(PLAIN))
    await asyncio.wait_for(fake.entered.wait(), GUARD)
    writer.transport.abort()
    with capture_logs() as logs:
        await asyncio.sleep(0.05)  # uvicorn sees the connection lost
        gate.set()
        [(status, _h, body)] = await exchange(server.port, get(PLAIN.replace("c-1", "c-2")))

    assert status == b"HTTP/1.1 200 OK" and b'"call_id":"c-2"' in body
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert [r.call_id for r in fake.requests] == ["c-1", "c-2"]


async def test_given_authorizer_failing_when_fast_answer_then_503_denial_and_logged(
    server: AuthorizeHTTPServer, fake: FakeAuthorizer
) -> None:
    fake.fail("tenant-a")
    with capture_logs() as logs:
        answers = await exchange(server.port, get(PLAIN), get(PLAIN.replace("tenant-a", "b")))

    [(status, _h, body), (next_status, _h2, _b2)] = answers
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert b'"reason":"SERVICE_UNAVAILABLE"' in body and b'"call_id":"c-1"' in body
    assert next_status == b"HTTP/1.1 200 OK"  # the connection serves on
    failures = [e for e in logs if e["event"] == "authorizer failed"]
    assert [(e["call_id"], e["account"]) for e in failures] == [("c-1", "tenant-a")]


async def test_given_authorizer_past_the_limit_when_fast_answer_then_503_and_late_one_dropped(
    fake: FakeAuthorizer,
) -> None:
    built = build_authorize_app(fake, default_switch_id="pbx-test", authorize_timeout=0.2)
    gate = fake.block("tenant-a")
    async with served(built) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            with capture_logs() as logs:
                writer.write(get(PLAIN))
                status, _h, body = await read_answer(reader)
                gate.set()  # the decision comes after all: nothing more is written
                await asyncio.sleep(0.05)
                writer.write(get(PLAIN.replace("tenant-a", "tenant-b").replace("c-1", "c-2")))
                next_status, _h2, next_body = await read_answer(reader)
        finally:
            writer.close()

    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert b'"reason":"SERVICE_UNAVAILABLE"' in body
    assert next_status == b"HTTP/1.1 200 OK" and b'"call_id":"c-2"' in next_body
    timeouts = [e for e in logs if e["event"] == "authorizer failed"]
    assert len(timeouts) == 1 and timeouts[0]["call_id"] == "c-1"
    assert fake.decided_soon == (2 if fake.soon else 0)


async def test_given_an_upgrade_request_when_sent_then_asgi_answers_it(
    server: AuthorizeHTTPServer, app: CountingApp
) -> None:
    upgrade = get(PLAIN, "Connection: Upgrade", "Upgrade: h2c")

    [(status, _h, body)] = await exchange(server.port, upgrade)

    assert status == b"HTTP/1.1 200 OK" and b'"allowed":true' in body
    assert app.asgi_requests == 1  # uvicorn's way, with the scope an upgrade reads


async def test_given_keep_alive_connections_when_one_idles_past_the_timeout_then_only_it_closes(
    app: CountingApp,
) -> None:
    async with served(app, keep_alive=0.5) as server:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            idle_writer.write(get(PLAIN))
            await read_answer(idle_reader)
            answers = []
            for n in range(20):  # 1 s of requests 50 ms apart: never idle 0.5 s
                busy_writer.write(get(PLAIN.replace("c-1", f"c-{n}")))
                answers.append(await read_answer(busy_reader))
                await asyncio.sleep(0.05)
            closed = await asyncio.wait_for(idle_reader.read(), GUARD)
            busy_writer.write(get(PLAIN.replace("c-1", "c-last")))
            last_status, _h, _b = await read_answer(busy_reader)
        finally:
            idle_writer.close()
            busy_writer.close()

    assert closed == b""  # the server closed the idle one
    assert [status for status, _h, _b in answers] == [b"HTTP/1.1 200 OK"] * 20
    assert last_status == b"HTTP/1.1 200 OK"


async def test_given_a_request_slower_than_the_keep_alive_when_answered_then_not_cut(
    app: CountingApp, fake: FakeAuthorizer
) -> None:
    async with served(app, keep_alive=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(get(PLAIN.replace("c-1", "c-0")))
            await read_answer(reader)  # the connection has been idle, then this comes:
            gate = fake.block("tenant-a")
            writer.write(get(PLAIN))
            await asyncio.wait_for(fake.entered.wait(), GUARD)
            await asyncio.sleep(0.8)  # past the keep-alive timeout, while authorizing
            gate.set()
            status, _h, body = await read_answer(reader)
        finally:
            writer.close()

    assert status == b"HTTP/1.1 200 OK" and b'"call_id":"c-1"' in body
