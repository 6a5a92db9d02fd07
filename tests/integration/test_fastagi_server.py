"""FastAGI authorization server over real TCP sockets, driven like Asterisk 22 drives it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason, Route
from daemon.fastagi_protocol import decision_variables
from daemon.fastagi_server import FastAGIServer
from daemon.simulator.agi_client import run_fastagi
from tests.support.fake_authorizer import FakeAuthorizer

GUARD = 10.0  # hang guard only; no test asserts on elapsed time
CARRIER = Route(carrier="carrier", dial_string="Local/15551230007@carrier/n", buy_rate=Decimal(1))


def asterisk_parse_args(command: str) -> list[str]:
    """Split a command line the way res_agi.c ``parse_args`` does."""
    words: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in command:
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if ch == '"' and not escaped:
            quoted = not quoted
            if current is None:
                current = []
            continue
        if ch in " \t" and not quoted and not escaped:
            if current is not None:
                words.append("".join(current))
            current = None
            continue
        current = (current or []) + [ch]
        escaped = False
    if current is not None:
        words.append("".join(current))
    return words


def header(**env: str) -> bytes:
    """An ``agi_*`` header block as Asterisk sends it (``\\n`` lines, blank line)."""
    return "".join(f"agi_{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


def fixture_header(fixtures_dir: Path) -> tuple[bytes, dict[str, str]]:
    data = json.loads((fixtures_dir / "asterisk" / "fastagi_authorize_dial_limit.json").read_text())
    session = data["agi_sessions"][0]
    return session["request_raw"].encode(), session["env"]


def ok_reply(command: str) -> bytes | None:
    return b"200 result=1\n"


async def agi_session(
    port: int, request: bytes, reply: Callable[[str], bytes | None] = ok_reply
) -> list[str]:
    """Play Asterisk: send the header, answer each command (None: hang up), return them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    commands: list[str] = []
    try:
        while line := await reader.readline():
            command = line.decode().rstrip("\n")
            commands.append(command)
            answer = reply(command)
            if answer is None:
                break
            writer.write(answer)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
    return commands


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before closing (a reset counts as a close)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def sessions_drained(server: FastAGIServer, leaving: int = 0) -> None:
    """Return once at most ``leaving`` sessions are open (callers bound it with a guard).

    A client sees the answer end (the server's half-close) before the server has read
    its replies, so a session may still be open for a moment after the client is done.
    """
    while server.active_sessions > leaving:  # noqa: ASYNC110 - hang-guarded poll of a count
        await asyncio.sleep(0.01)


def variables(commands: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for command in commands:
        words = asterisk_parse_args(command)
        assert words[:2] == ["SET", "VARIABLE"] and len(words) == 4, command
        pairs.append((words[2], words[3]))
    return pairs


@pytest.fixture
def fake() -> FakeAuthorizer:
    return FakeAuthorizer()


@pytest.fixture
async def agi_server(fake: FakeAuthorizer) -> AsyncIterator[FastAGIServer]:
    server = FastAGIServer(fake, host="127.0.0.1", port=0, default_switch_id="pbx-test")
    await server.start()
    try:
        yield server
    finally:
        await server.close(grace_period=1.0)


async def test_given_recorded_asterisk_request_when_allowed_then_variables_in_order(
    agi_server: FastAGIServer, fake: FakeAuthorizer, fixtures_dir: Path
) -> None:
    request, env = fixture_header(fixtures_dir)
    fake.allow("tenant-a", 4, routes=(CARRIER,))

    commands = await asyncio.wait_for(agi_session(agi_server.port, request), GUARD)

    assert variables(commands) == [
        ("AUTH_REASON", "OK"),
        ("AUTH_MAXSECS", "4"),
        ("AUTH_MAXMS", "4000"),
        ("AUTH_ROUTES", "Local/15551230007@carrier/n"),
        ("AUTH_ROUTE_COUNT", "1"),
        ("AUTH_ROUTE_1", "Local/15551230007@carrier/n"),
        ("AUTH_RESULT", "ALLOW"),
    ]
    assert fake.requests == [
        AuthorizationRequest(
            switch_id="pbx-test",
            call_id=env["agi_uniqueid"],
            account="tenant-a",
            caller="15550001001",
            callee="15551230007",
        )
    ]


async def test_given_two_routes_when_allowed_then_routes_joined_with_ampersand(
    agi_server: FastAGIServer, fixtures_dir: Path
) -> None:
    request, _ = fixture_header(fixtures_dir)

    commands = await asyncio.wait_for(agi_session(agi_server.port, request), GUARD)

    found = dict(variables(commands))
    assert found["AUTH_ROUTES"] == "PJSIP/15551230007@carrier-a&PJSIP/15551230007@carrier-b"
    assert found["AUTH_ROUTE_COUNT"] == "2"
    assert found["AUTH_ROUTE_2"] == "PJSIP/15551230007@carrier-b"
    assert commands[0] == 'SET VARIABLE AUTH_REASON "OK"'


async def test_given_no_credit_when_denied_then_empty_limits_and_deny_last(
    agi_server: FastAGIServer, fake: FakeAuthorizer, fixtures_dir: Path
) -> None:
    request, _ = fixture_header(fixtures_dir)
    fake.deny("tenant-a", Reason.INSUFFICIENT_CREDIT)

    commands = await asyncio.wait_for(agi_session(agi_server.port, request), GUARD)

    assert variables(commands) == [
        ("AUTH_REASON", "INSUFFICIENT_CREDIT"),
        ("AUTH_MAXSECS", ""),
        ("AUTH_MAXMS", ""),
        ("AUTH_ROUTES", ""),
        ("AUTH_ROUTE_COUNT", "0"),
        ("AUTH_RESULT", "DENY"),
    ]


async def test_given_no_args_when_authorizing_then_channel_fields_are_used(
    agi_server: FastAGIServer, fake: FakeAuthorizer
) -> None:
    request = header(
        network="yes",
        network_script="authorize?switch=pbx1",
        uniqueid="1700000000.7",
        callerid="15550009999",
        extension="15551000005",
        accountcode="tenant-z",
    )

    await asyncio.wait_for(agi_session(agi_server.port, request), GUARD)

    assert fake.requests == [
        AuthorizationRequest(
            switch_id="pbx1",
            call_id="1700000000.7",
            account="tenant-z",
            caller="15550009999",
            callee="15551000005",
        )
    ]


async def test_given_peer_mapping_when_authorizing_then_switch_comes_from_peer(
    fake: FakeAuthorizer,
) -> None:
    seen: list[str] = []

    def switch_for_peer(host: str) -> str:
        seen.append(host)
        return "pbx-by-ip"

    server = FastAGIServer(
        fake, host="127.0.0.1", port=0, switch_for_peer=switch_for_peer, default_switch_id="x"
    )
    await server.start()
    try:
        request = header(network_script="authorize", uniqueid="1.1", arg_1="100", arg_3="t")
        await asyncio.wait_for(agi_session(server.port, request), GUARD)
    finally:
        await server.close()

    assert seen == ["127.0.0.1"]
    assert [r.switch_id for r in fake.requests] == ["pbx-by-ip"]


@pytest.mark.parametrize(
    "env",
    [
        {"network_script": "balance", "uniqueid": "1.2", "arg_1": "100", "arg_3": "t"},
        {"network_script": "authorize", "uniqueid": "1.2", "arg_1": "100"},
        {"network_script": "authorize", "arg_1": "100", "arg_3": "t"},
    ],
    ids=["unknown-script", "no-account", "no-uniqueid"],
)
async def test_given_bad_request_when_authorizing_then_deny_bad_request(
    agi_server: FastAGIServer, fake: FakeAuthorizer, env: dict[str, str]
) -> None:
    commands = await asyncio.wait_for(agi_session(agi_server.port, header(**env)), GUARD)

    found = dict(variables(commands))
    assert (found["AUTH_RESULT"], found["AUTH_REASON"]) == ("DENY", "BAD_REQUEST")
    assert fake.requests == []


async def test_given_failing_authorizer_when_authorizing_then_service_unavailable_logged(
    agi_server: FastAGIServer, fake: FakeAuthorizer, fixtures_dir: Path
) -> None:
    request, env = fixture_header(fixtures_dir)
    fake.fail("tenant-a")

    with capture_logs() as logs:
        commands = await asyncio.wait_for(agi_session(agi_server.port, request), GUARD)

    found = dict(variables(commands))
    assert (found["AUTH_RESULT"], found["AUTH_REASON"]) == ("DENY", "SERVICE_UNAVAILABLE")
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["call_id"]) for e in errors] == [
        ("authorizer failed", env["agi_uniqueid"])
    ]


@pytest.mark.parametrize(
    "answer",
    [b"HANGUP\n", b"510 Invalid or unknown command\n", b"520 End of proper usage.\n", None],
    ids=["hangup", "510", "520", "eof"],
)
async def test_given_asterisk_ends_dialogue_when_answering_then_session_ends_quietly(
    agi_server: FastAGIServer, fixtures_dir: Path, answer: bytes | None
) -> None:
    request, _ = fixture_header(fixtures_dir)
    replies: list[bytes | None] = [b"200 result=1\n", answer]

    with capture_logs() as logs:
        commands = await asyncio.wait_for(
            agi_session(agi_server.port, request, lambda _: replies.pop(0) if replies else None),
            GUARD,
        )
        # the server still serves the next session normally
        after = await asyncio.wait_for(agi_session(agi_server.port, request), GUARD)

    # the whole answer left at once: the peer saw it in order up to where it stopped
    assert len(commands) >= 2 and commands == after[: len(commands)]
    assert variables(after)[-1] == ("AUTH_RESULT", "ALLOW")
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]
    await asyncio.wait_for(sessions_drained(agi_server), GUARD)


async def _twenty_sessions(port: int, fixtures_dir: Path) -> list[list[str]]:
    request, _ = fixture_header(fixtures_dir)
    return await asyncio.wait_for(
        asyncio.gather(*(agi_session(port, request) for _ in range(20))), GUARD
    )


async def test_given_stalled_client_when_others_authorize_then_they_all_complete(
    agi_server: FastAGIServer, fixtures_dir: Path
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
    writer.write(b"agi_network: yes\nagi_network_script: authorize\n")  # never finishes
    await writer.drain()

    results = await _twenty_sessions(agi_server.port, fixtures_dir)

    assert all(variables(r)[-1] == ("AUTH_RESULT", "ALLOW") for r in results)
    await asyncio.wait_for(sessions_drained(agi_server, leaving=1), GUARD)
    assert agi_server.active_sessions == 1  # the staller, still held open
    assert not reader.at_eof()
    writer.close()


async def test_given_clients_disconnecting_before_headers_when_others_authorize_then_served(
    agi_server: FastAGIServer, fixtures_dir: Path
) -> None:
    for partial in (b"", b"agi_network: yes\n", b"agi_netw"):
        _, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
        writer.write(partial)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    results = await _twenty_sessions(agi_server.port, fixtures_dir)

    assert len(results) == 20 and all(variables(r)[-1] == ("AUTH_RESULT", "ALLOW") for r in results)

    # EOF ended those sessions: nothing left spinning
    await asyncio.wait_for(sessions_drained(agi_server), GUARD)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /v1/authorize HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\n",
        b"x" * 10000 + b"\n",
        b"agi_network: yes\n" * 200,
        b"\xff\xfe\n\n",
    ],
    ids=["http", "blank", "long-line", "too-many-lines", "not-utf8"],
)
async def test_given_garbage_when_connected_then_closed_without_answer_and_others_served(
    agi_server: FastAGIServer, fake: FakeAuthorizer, fixtures_dir: Path, garbage: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
    writer.write(garbage)
    await writer.drain()

    received = await asyncio.wait_for(read_until_closed(reader), GUARD)
    results = await _twenty_sessions(agi_server.port, fixtures_dir)

    assert received == b""
    assert len(fake.requests) == 20 and all(
        variables(r)[-1] == ("AUTH_RESULT", "ALLOW") for r in results
    )
    writer.close()


async def test_given_header_timeout_when_client_stalls_then_connection_closed(
    fake: FakeAuthorizer,
) -> None:
    server = FastAGIServer(
        fake, host="127.0.0.1", port=0, default_switch_id="x", header_timeout=0.2
    )
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\n")
        received = await asyncio.wait_for(reader.read(), GUARD)
        writer.close()
    finally:
        await server.close()

    assert received == b""
    assert fake.requests == []


async def test_given_session_in_flight_when_closing_then_it_finishes_and_no_new_accepted(
    fake: FakeAuthorizer, fixtures_dir: Path
) -> None:
    server = FastAGIServer(fake, host="127.0.0.1", port=0, default_switch_id="x")
    await server.start()
    port = server.port
    gate = fake.block("tenant-a")
    request, _ = fixture_header(fixtures_dir)
    in_flight = asyncio.create_task(agi_session(port, request))
    await asyncio.wait_for(fake.entered.wait(), GUARD)

    closing = asyncio.create_task(server.close(grace_period=GUARD))
    await asyncio.sleep(0)  # let close() stop the listener
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert not closing.done()
    gate.set()
    commands = await asyncio.wait_for(in_flight, GUARD)
    await asyncio.wait_for(closing, GUARD)

    assert variables(commands)[-1] == ("AUTH_RESULT", "ALLOW")


async def test_given_stuck_session_when_grace_period_ends_then_cancelled(
    fake: FakeAuthorizer, fixtures_dir: Path
) -> None:
    server = FastAGIServer(
        fake, host="127.0.0.1", port=0, default_switch_id="x", authorize_timeout=GUARD * 3
    )
    await server.start()
    fake.block("tenant-a")
    request, _ = fixture_header(fixtures_dir)
    in_flight = asyncio.create_task(agi_session(server.port, request))
    await asyncio.wait_for(fake.entered.wait(), GUARD)

    await asyncio.wait_for(server.close(grace_period=0.05), GUARD)
    commands = await asyncio.wait_for(in_flight, GUARD)

    assert commands == []
    assert server.active_sessions == 0


def test_given_example_dialplan_when_read_then_it_uses_only_variables_the_server_sets() -> None:
    conf = Path(__file__).resolve().parents[2] / "config" / "asterisk"
    text = (conf / "extensions_ratekeeper.conf").read_text()
    dialplan = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(";"))
    sent = {name for name, _ in decision_variables(AuthorizationDecision.deny(Reason.OK))}

    used = set(re.findall(r"\bAUTH_[A-Z_]+[A-Z]\b", dialplan))

    assert "AGI(${RK_AGI_URL},${EXTEN},${CALLERID(num)},${CHANNEL(accountcode)})" in dialplan
    assert used <= sent, used - sent
    assert {"AUTH_RESULT", "AUTH_MAXMS", "AUTH_ROUTES", "AUTH_ROUTE_COUNT"} <= used


async def test_given_peer_reading_everything_before_replying_when_answered_then_one_block_and_eof(
    agi_server: FastAGIServer, fixtures_dir: Path
) -> None:
    # Asterisk reads commands through a stdio buffer and only polls the socket again after
    # running each one: the answer must be complete and followed by EOF before any reply.
    request, _ = fixture_header(fixtures_dir)
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_server.port)
    writer.write(request)

    answer = await asyncio.wait_for(reader.read(), GUARD)  # returns at the server's EOF
    commands = answer.decode().splitlines()
    with capture_logs() as logs:
        writer.write(b"200 result=1\n" * len(commands))  # the replies, in order, afterwards
        await writer.drain()
        await asyncio.wait_for(sessions_drained(agi_server), GUARD)
    writer.close()

    assert [name for name, _ in variables(commands)] == [
        "AUTH_REASON",
        "AUTH_MAXSECS",
        "AUTH_MAXMS",
        "AUTH_ROUTES",
        "AUTH_ROUTE_COUNT",
        "AUTH_ROUTE_1",
        "AUTH_ROUTE_2",
        "AUTH_RESULT",
    ]
    assert not [e for e in logs if e["log_level"] in ("warning", "error")]


async def test_given_peer_not_replying_after_the_answer_when_timeout_then_session_ends(
    fake: FakeAuthorizer, fixtures_dir: Path
) -> None:
    server = FastAGIServer(
        fake, host="127.0.0.1", port=0, default_switch_id="x", command_timeout=0.2
    )
    await server.start()
    try:
        request, _ = fixture_header(fixtures_dir)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), GUARD)
        await asyncio.wait_for(sessions_drained(server), GUARD)  # no reply ever: timed out
        writer.close()
    finally:
        await server.close()

    assert answer.decode().splitlines()[-1] == 'SET VARIABLE AUTH_RESULT "ALLOW"'


async def test_given_simulator_agi_client_when_authorizing_then_success_with_variables(
    agi_server: FastAGIServer, fake: FakeAuthorizer
) -> None:
    fake.allow("tenant-s", 42)
    env = [
        ("agi_network", "yes"),
        ("agi_network_script", "authorize"),
        ("agi_uniqueid", "1795630738.99"),
        ("agi_arg_1", "15551230007"),
        ("agi_arg_2", "15550001001"),
        ("agi_arg_3", "tenant-s"),
    ]

    result = await run_fastagi("127.0.0.1", agi_server.port, env, timeout=GUARD)

    assert result.status == "SUCCESS"
    assert (result.variables["AUTH_RESULT"], result.variables["AUTH_MAXMS"]) == ("ALLOW", "42000")
    assert list(result.variables)[-1] == "AUTH_RESULT"
    await asyncio.wait_for(sessions_drained(agi_server), GUARD)
