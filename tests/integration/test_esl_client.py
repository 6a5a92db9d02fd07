"""ESLClient over real TCP against the scriptable ESL server: auth, ordering, jobs, loss."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest
from structlog.testing import capture_logs

from connectors.esl.client import ClientItem, ESLClient, ESLSettings, Marker
from connectors.esl.errors import (
    ESLAuthenticationError,
    ESLCommandError,
    ESLConnectionLost,
)
from connectors.esl.parser import ESLEvent
from connectors.events import SwitchConnected, SwitchDisconnected
from tests.support.esl_server import (
    ESLTestServer,
    api_response,
    background_job,
    bgapi_reply,
    channel_event,
    command_reply,
    default_responder,
    disconnect_notice,
    split_frames,
)

SELECTIVE = (
    "event plain CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER"
    " CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_PARK"
    " CHANNEL_UUID HEARTBEAT BACKGROUND_JOB CUSTOM callcenter::info"
)


class Inbox:
    """Records every item the client delivers, in order."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.items: list[ClientItem] = []
        self.fail_on = fail_on
        self.changed = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def __call__(self, item: ClientItem) -> None:
        if self.gate is not None and isinstance(item, ESLEvent):
            await self.gate.wait()
        self.items.append(item)
        self.changed.set()
        if isinstance(item, ESLEvent) and item.name == self.fail_on:
            raise RuntimeError("handler bug")

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def of(self, kind: type) -> list[ClientItem]:
        return [item for item in self.items if isinstance(item, kind)]

    def events(self) -> list[ESLEvent]:
        return [item for item in self.items if isinstance(item, ESLEvent)]

    def names(self) -> list[str]:
        return [event.name for event in self.events()]


def settings(port: int, **overrides: object) -> ESLSettings:
    base: dict[str, object] = {"backoff_min": 0.01, "backoff_max": 0.04}
    base.update(overrides)
    return ESLSettings("127.0.0.1", port, "ClueCon", **base)  # type: ignore[arg-type]


async def started(
    server: ESLTestServer, inbox: Inbox, **overrides: object
) -> tuple[ESLClient, asyncio.Task[None]]:
    """A client running against ``server``, once it announced its first connection."""
    port = await server.start()
    client = ESLClient(settings(port, **overrides), inbox, "fs-1")
    runner = asyncio.create_task(client.run())
    await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) >= 1)
    return client, runner


async def stop(client: ESLClient, runner: asyncio.Task[None], server: ESLTestServer) -> None:
    await client.close()
    await runner
    await server.close()


async def test_given_wrong_password_when_login_then_authentication_error_without_secret() -> None:
    server = ESLTestServer(password="the-right-one")
    port = await server.start()
    client = ESLClient(ESLSettings("127.0.0.1", port, "s3cret-pw"), Inbox(), "fs-1")
    with capture_logs() as logs:
        await client.connect()
        with pytest.raises(ESLAuthenticationError, match="-ERR invalid") as raised:
            await client.login()
        await client.close()
    await server.close()
    assert raised.value.code == "ESL_AUTHENTICATION_FAILED"
    assert "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in repr(ESLSettings("h", 1, "s3cret-pw"))
    assert "s3cret-pw" not in repr(logs)


async def test_given_wrong_password_when_running_then_refusal_logged_and_backoff_grows() -> None:
    server = ESLTestServer(password="the-right-one")
    port = await server.start()
    inbox = Inbox()
    client = ESLClient(
        ESLSettings("127.0.0.1", port, "s3cret-pw", backoff_min=0.01, backoff_max=0.04),
        inbox,
        "fs-1",
    )
    with capture_logs() as logs:
        runner = asyncio.create_task(client.run())
        await server.wait_for_connections(4)
        await client.close()
        await runner
    await server.close()
    refusals = [e for e in logs if e["event"] == "esl.login_refused"]
    assert len(refusals) >= 3
    assert all(e["log_level"] == "error" and "-ERR invalid" in e["error"] for e in refusals)
    windows = [(0.005, 0.01), (0.01, 0.02), (0.02, 0.04), (0.02, 0.04)]
    for event, (low, high) in zip(refusals, windows, strict=False):
        assert low <= event["retry_in"] <= high
    assert "s3cret-pw" not in repr(logs)
    assert inbox.items == []


async def test_given_login_when_subscribing_then_event_command_sent_and_connected_first() -> None:
    def responder(command: str) -> bytes | None:
        reply = default_responder(command)
        if command.startswith("event ") and reply is not None:  # an event right behind +OK
            return reply + channel_event("CHANNEL_CREATE", "u-1", 1)
        return reply

    server = ESLTestServer(responder=responder)
    port = await server.start()
    inbox = Inbox()
    client = ESLClient(settings(port), inbox, "fs-1")
    await client.connect()
    await client.login()
    await inbox.wait_for(lambda: len(inbox.items) == 2)
    await client.close()
    await server.close()
    assert server.received == ["auth ClueCon", SELECTIVE]
    assert inbox.items[0] == SwitchConnected(switch_id="fs-1")
    assert inbox.names() == ["CHANNEL_CREATE"]


async def test_given_events_without_background_job_when_subscribing_then_it_is_added() -> None:
    server = ESLTestServer()
    port = await server.start()
    events = ("CHANNEL_ANSWER", "CUSTOM", "callcenter::info")
    client = ESLClient(settings(port, events=events, event_format="json"), Inbox(), "fs-1")
    await client.connect()
    await client.login()
    await client.close()
    await server.close()
    assert server.received[1] == "event json CHANNEL_ANSWER BACKGROUND_JOB CUSTOM callcenter::info"


async def test_given_refused_subscription_when_login_then_command_error() -> None:
    def responder(command: str) -> bytes | None:
        if command.startswith("event "):
            return command_reply("-ERR no keywords supplied")
        return default_responder(command)

    server = ESLTestServer(responder=responder)
    port = await server.start()
    inbox = Inbox()
    client = ESLClient(settings(port), inbox, "fs-1")
    await client.connect()
    with pytest.raises(ESLCommandError, match="no keywords supplied"):
        await client.login()
    await client.close()
    await server.close()
    assert inbox.items == []


def echo_responder(command: str) -> bytes | None:
    """``api echo X`` answers ``X``, ``api fail`` answers ``-ERR``, others by default."""
    words = command.split(" ", 2)
    if words[:2] == ["api", "echo"]:
        return api_response(words[2] + "\n")
    if words[:2] == ["api", "fail"]:
        return api_response("-ERR no such channel\n")
    if command.startswith("api show channels as json"):
        return api_response(
            '{"row_count":2,"rows":[{"uuid":"a-1","name":"loopback/1000-a","accountcode":'
            '"tenant-a"},{"uuid":"b-1","name":"loopback/1000-b","accountcode":"tenant-a"}]}\n'
        )
    if command.startswith("api uuid_getvar a-1 accountcode"):
        return api_response("tenant-a")
    if command.startswith("api uuid_getvar a-1 "):
        return api_response("_undef_")
    return default_responder(command)


async def test_given_concurrent_api_calls_when_answered_then_each_gets_its_own_answer() -> None:
    server = ESLTestServer(responder=echo_responder)
    inbox = Inbox()
    client, runner = await started(server, inbox)
    answers = await asyncio.gather(*(client.api(f"echo {i}") for i in range(30)))
    assert answers == [f"{i}\n" for i in range(30)]
    with pytest.raises(ESLCommandError, match="-ERR no such channel") as raised:
        await client.api("fail now")
    assert raised.value.reply == "-ERR no such channel\n"
    assert await client.uuid_kill("a-1") == "+OK\n"
    await client.uuid_kill("a-1", "CALL_REJECTED")
    await client.uuid_transfer("b-1", "15551234567")
    await client.sched_hangup("a-1", 4)
    assert await client.show_channels() == [
        {"uuid": "a-1", "name": "loopback/1000-a", "accountcode": "tenant-a"},
        {"uuid": "b-1", "name": "loopback/1000-b", "accountcode": "tenant-a"},
    ]
    assert await client.uuid_getvar("a-1", "accountcode") == "tenant-a"
    assert await client.uuid_getvar("a-1", "nothing") is None
    assert server.commands("api uuid_") + server.commands("api sched") == [
        "api uuid_kill a-1 NORMAL_CLEARING",
        "api uuid_kill a-1 CALL_REJECTED",
        "api uuid_transfer b-1 15551234567 XML default",
        "api uuid_getvar a-1 accountcode",
        "api uuid_getvar a-1 nothing",
        "api sched_hangup +4 a-1 ALLOTTED_TIMEOUT",
    ]
    with pytest.raises(ValueError, match="uuid"):
        await client.uuid_kill("a-1\napi fsctl shutdown")
    with pytest.raises(ValueError, match="cause"):
        await client.uuid_kill("a-1", "NORMAL CLEARING")
    with pytest.raises(ValueError, match="command"):
        await client.api("status\n\napi fsctl shutdown")
    assert not server.commands("api fsctl")
    await stop(client, runner, server)


async def test_given_no_channels_when_show_channels_then_empty_list() -> None:
    def responder(command: str) -> bytes | None:
        if command == "api show channels as json":
            return api_response("\n0 total.\n")
        return default_responder(command)

    server = ESLTestServer(responder=responder)
    client, runner = await started(server, Inbox())
    assert await client.show_channels() == []
    await stop(client, runner, server)


async def test_given_command_timed_out_when_answer_comes_late_then_later_answers_line_up() -> (
    None
):
    def responder(command: str) -> bytes | None:
        if command == "api late":
            return None
        if command == "api echo next":  # FreeSWITCH answers in order: the late one first
            return api_response("late answer\n") + api_response("next\n")
        return echo_responder(command)

    server = ESLTestServer(responder=responder)
    client, runner = await started(server, Inbox(), command_timeout=0.05)
    with pytest.raises(ESLCommandError, match="no answer"):
        await client.api("late")
    assert await client.api("echo next") == "next\n"
    await stop(client, runner, server)


async def test_given_listing_when_injected_then_marker_sits_where_the_reply_was() -> None:
    def responder(command: str) -> bytes | None:
        if command == "api show channels as json":  # the reply, then at once a later event
            return api_response("\n0 total.\n") + channel_event("CHANNEL_CREATE", "u-9", 9)
        return default_responder(command)

    server = ESLTestServer(responder=responder)
    inbox = Inbox()
    client, runner = await started(server, inbox)
    await server.push(channel_event("CHANNEL_HANGUP", "u-1", 1))
    await inbox.wait_for(lambda: len(inbox.events()) == 1)
    rows = await client.show_channels()
    client.inject(("listing", rows))
    await inbox.wait_for(lambda: len(inbox.events()) == 2)
    await stop(client, runner, server)
    kinds = [type(item).__name__ for item in inbox.items]
    assert kinds[:4] == ["SwitchConnected", "ESLEvent", "Marker", "ESLEvent"]
    assert inbox.items[2] == Marker(("listing", []))
    assert inbox.names() == ["CHANNEL_HANGUP", "CHANNEL_CREATE"]


async def test_given_two_jobs_when_they_end_out_of_order_then_each_matched_by_job_uuid() -> None:
    def responder(command: str) -> bytes | None:
        if command.startswith("bgapi originate "):
            return bgapi_reply(f"job-{command.rsplit('/', 1)[1]}")
        return default_responder(command)

    server = ESLTestServer(responder=responder)
    inbox = Inbox()
    client, runner = await started(server, inbox)
    first = asyncio.create_task(client.bgapi("originate loopback/a", timeout=10))
    second = asyncio.create_task(client.bgapi("originate loopback/b", timeout=10))
    third = asyncio.create_task(client.bgapi("originate loopback/c", timeout=10))
    await server.wait_for_command("bgapi originate", count=3)
    await server.push(
        background_job("job-b", "+OK uuid-b\n"),
        background_job("job-unknown", "+OK other\n"),
        background_job("job-c", "-ERR NO_ANSWER\n"),
        background_job("job-a", "+OK uuid-a\n"),
    )
    assert await first == "+OK uuid-a\n"
    assert await second == "+OK uuid-b\n"
    with pytest.raises(ESLCommandError, match="NO_ANSWER"):
        await third
    await inbox.wait_for(lambda: len(inbox.events()) == 4)
    assert [e["Job-UUID"] for e in inbox.events()] == ["job-b", "job-unknown", "job-c", "job-a"]
    await stop(client, runner, server)


async def test_given_many_events_in_small_pieces_when_read_then_delivered_in_order() -> None:
    server = ESLTestServer()
    inbox = Inbox()
    client, runner = await started(server, inbox)
    stream = b"".join(channel_event("CHANNEL_STATE", f"u-{i}", i) for i in range(1, 61))
    for start in range(0, len(stream), 37):
        await server.push(stream[start : start + 37])
    await inbox.wait_for(lambda: len(inbox.events()) == 60)
    events = inbox.events()
    assert [e["Event-Sequence"] for e in events] == [str(i) for i in range(1, 61)]
    assert events[0]["Event-Date-Local"] == "2026-11-25 18:22:00"
    await stop(client, runner, server)


async def test_given_handler_raises_when_event_delivered_then_logged_and_stream_goes_on() -> None:
    server = ESLTestServer(responder=echo_responder)
    inbox = Inbox(fail_on="CHANNEL_ANSWER")
    with capture_logs() as logs:
        client, runner = await started(server, inbox)
        await server.push(
            channel_event("CHANNEL_CREATE", "u-1", 1),
            channel_event("CHANNEL_ANSWER", "u-1", 2),
            channel_event("CHANNEL_HANGUP", "u-1", 3),
        )
        await inbox.wait_for(lambda: len(inbox.events()) == 3)
        assert await client.api("echo still-here") == "still-here\n"
        await stop(client, runner, server)
    failures = [e for e in logs if e["event"] == "esl.handler_failed"]
    assert [(f["esl_event"], f["switch_id"]) for f in failures] == [("CHANNEL_ANSWER", "fs-1")]
    assert inbox.names() == ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP"]
    assert len(inbox.of(SwitchConnected)) == 1


async def test_given_slow_handler_when_api_called_then_answer_comes_and_events_wait_in_order() -> (
    None
):
    server = ESLTestServer(responder=echo_responder)
    inbox = Inbox()
    client, runner = await started(server, inbox)
    inbox.gate = asyncio.Event()  # the handler blocks on every event until the gate opens
    await server.push(*(channel_event("CHANNEL_STATE", f"u-{i}", i) for i in range(1, 6)))
    assert await client.api("echo while-busy") == "while-busy\n"
    assert inbox.events() == []
    inbox.gate.set()
    await inbox.wait_for(lambda: len(inbox.events()) == 5)
    assert [e["Event-Sequence"] for e in inbox.events()] == ["1", "2", "3", "4", "5"]
    await stop(client, runner, server)


async def test_given_silent_switch_when_keepalive_times_out_then_client_reconnects() -> None:
    def responder(command: str) -> bytes | None:
        return None if command == "api status" else default_responder(command)

    server = ESLTestServer(responder=responder)
    inbox = Inbox()
    with capture_logs() as logs:
        client, runner = await started(
            server, inbox, keepalive_interval=0.02, keepalive_timeout=0.05
        )
        await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) >= 2)
        await stop(client, runner, server)
    disconnects = inbox.of(SwitchDisconnected)
    assert disconnects[0] == SwitchDisconnected(switch_id="fs-1", reason="keepalive timeout")
    assert any(e["event"] == "esl.keepalive_timeout" for e in logs)
    assert len(server.commands("auth ")) >= 2


async def test_given_pending_command_when_server_drops_then_fails_and_is_not_replayed() -> None:
    def responder(command: str) -> bytes | None:
        return None if command == "api slow" else default_responder(command)

    server = ESLTestServer(responder=responder)
    inbox = Inbox()
    with capture_logs() as logs:
        client, runner = await started(server, inbox)
        pending = asyncio.create_task(client.api("slow"))
        await server.wait_for_command("api slow")
        server.drop_all()
        with pytest.raises(ESLConnectionLost):
            await pending
        await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) == 2)
        await stop(client, runner, server)
    kinds = [type(item).__name__ for item in inbox.items]
    assert kinds[:3] == ["SwitchConnected", "SwitchDisconnected", "SwitchConnected"]
    assert server.commands("api slow") == ["api slow"]
    assert server.commands("auth ") == ["auth ClueCon", "auth ClueCon"]
    assert server.commands("event ") == [SELECTIVE, SELECTIVE]
    retry = next(e for e in logs if e["event"] == "esl.disconnected" and "retry_in" in e)
    assert 0.005 <= retry["retry_in"] <= 0.01


async def test_given_disconnect_notice_mid_stream_when_read_then_treated_as_loss() -> None:
    server = ESLTestServer()
    inbox = Inbox()
    with capture_logs() as logs:
        client, runner = await started(server, inbox)
        await server.push(
            channel_event("CHANNEL_HANGUP", "u-1", 1)
            + disconnect_notice("The system is being shut down.\n")
            + channel_event("CHANNEL_HANGUP_COMPLETE", "u-1", 2)
        )
        await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) == 2)
        await stop(client, runner, server)
    kinds = [type(item).__name__ for item in inbox.items]
    assert kinds[:4] == ["SwitchConnected", "ESLEvent", "SwitchDisconnected", "SwitchConnected"]
    assert inbox.names() == ["CHANNEL_HANGUP"]
    reason = "disconnect notice: The system is being shut down."
    assert inbox.of(SwitchDisconnected)[0] == SwitchDisconnected(switch_id="fs-1", reason=reason)
    notices = [e for e in logs if e["event"] == "esl.disconnect_notice"]
    assert notices[0]["log_level"] == "warning"
    assert notices[0]["notice"] == "The system is being shut down."


async def test_given_malformed_frames_when_read_then_logged_with_culprit_and_stream_goes_on() -> (
    None
):
    server = ESLTestServer(responder=echo_responder)
    inbox = Inbox()
    bad_body = b"Event-Name: CHANNEL_ANSWER\nno colon in this line\n\n"
    bad_event = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(bad_body)
    with capture_logs() as logs:
        client, runner = await started(server, inbox)
        await server.push(
            channel_event("CHANNEL_CREATE", "u-1", 1),
            b"this is not a header line\n\n",
            bad_event + bad_body,
            channel_event("CHANNEL_ANSWER", "u-1", 2),
        )
        await inbox.wait_for(lambda: len(inbox.events()) == 2)
        assert await client.api("echo alive") == "alive\n"
        await stop(client, runner, server)
    assert inbox.names() == ["CHANNEL_CREATE", "CHANNEL_ANSWER"]
    assert len(inbox.of(SwitchConnected)) == 1
    parse_errors = [e for e in logs if e["event"] == "esl.parse_error"]
    assert [e["text"] for e in parse_errors] == ["this is not a header line"]
    bad_events = [e for e in logs if e["event"] == "esl.bad_event"]
    assert len(bad_events) == 1
    assert bad_events[0]["event_name"] == "CHANNEL_ANSWER"
    assert "no colon in this line" in bad_events[0]["error"]


async def test_given_malformed_frame_while_command_pending_when_read_then_connection_dropped() -> (
    None
):
    def responder(command: str) -> bytes | None:
        if command == "api garbled":
            return b"Content-Type: api/response\nContent-Length: many\n\n+OK\n"
        return default_responder(command)

    server = ESLTestServer(responder=responder)
    inbox = Inbox()
    client, runner = await started(server, inbox)
    with pytest.raises(ESLConnectionLost, match="unreadable frame"):
        await client.api("garbled")
    await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) == 2)
    await stop(client, runner, server)
    assert server.commands("api garbled") == ["api garbled"]


def recorded_commands(path: Path) -> list[str]:
    """The commands column of a ``.commands.txt`` recording, comments left out."""
    commands = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        text = line.split("\t", 2)[2]
        if not text.startswith("#"):
            commands.append(text)
    return commands


async def test_given_recorded_call_when_replayed_then_every_event_arrives_intact_in_order(
    fixtures_dir: Path,
) -> None:
    recording = (fixtures_dir / "freeswitch" / "answered_call.esl").read_bytes()
    commands = recorded_commands(fixtures_dir / "freeswitch" / "answered_call.commands.txt")
    server = ESLTestServer(recordings=[recording], chunking="random")
    inbox = Inbox()
    client, runner = await started(server, inbox, events=("ALL",))
    originate = commands[2].removeprefix("bgapi ")
    assert await client.bgapi(originate, timeout=10) == "+OK 154a4a84-63de-4409-9aa2-34b02c35d34a\n"
    bye = await client.command("exit")
    assert bye.reply_text == "+OK bye"
    await inbox.wait_for(lambda: len(inbox.of(SwitchDisconnected)) == 1)
    await stop(client, runner, server)
    assert server.received[: len(commands)] == commands

    recorded = [f for f in split_frames(recording) if b"Content-Type: text/event-plain" in f]
    expected = [recorded_headers(frame) for frame in recorded]
    kinds = [type(item).__name__ for item in inbox.items]
    assert kinds[:50] == ["SwitchConnected"] + ["ESLEvent"] * 48 + ["SwitchDisconnected"]
    events = inbox.events()[:48]
    assert [e.name for e in events] == [dict(pairs)["Event-Name"] for pairs in expected]
    for event, pairs in zip(events, expected, strict=True):
        assert sorted((k, v) for k in event for v in event.getall(k)) == sorted(pairs)
    job = next(e for e in events if e.name == "BACKGROUND_JOB")
    assert job.body == "+OK 154a4a84-63de-4409-9aa2-34b02c35d34a\n"
    hangup = next(e for e in events if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert hangup.getall("Hangup-Cause") == ["NORMAL_CLEARING", "NORMAL_CLEARING"]
    assert events[0]["Event-Date-Local"] == "2026-11-25 18:21:57"
    assert inbox.of(SwitchDisconnected)[0] == SwitchDisconnected(
        switch_id="fs-1", reason="disconnect notice: Disconnected, goodbye."
    )


def recorded_headers(frame: bytes) -> list[tuple[str, str]]:
    """The (name, URL-decoded value) pairs of a recorded event-plain frame, read directly."""
    block = frame.split(b"\n\n", 2)[1].decode()
    pairs = []
    for line in block.split("\n"):
        name, _, value = line.partition(": ")
        pairs.append((name, unquote(value)))
    return pairs
