"""AMIClient over real TCP against the replay server: login, actions, lists, keepalive."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connectors.ami.client import AMIClient, AMISettings, ClientItem
from connectors.ami.connection import AMIConnection
from connectors.ami.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionLost,
)
from connectors.ami.parser import AMIMessage
from connectors.events import SwitchConnected, SwitchDisconnected
from tests.support.ami_replay import (
    Action,
    AMIReplayServer,
    default_responder,
    response,
    split_recording,
    with_action_id,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "asterisk"


class Inbox:
    """Records every item the client delivers, in order."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.items: list[ClientItem] = []
        self.fail_on = fail_on
        self.changed = asyncio.Event()

    async def __call__(self, item: ClientItem) -> None:
        self.items.append(item)
        self.changed.set()
        if isinstance(item, AMIMessage) and item.get("Event") == self.fail_on:
            raise RuntimeError("handler bug")

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def of(self, kind: type) -> list[ClientItem]:
        return [item for item in self.items if isinstance(item, kind)]

    def messages(self) -> list[AMIMessage]:
        return [item for item in self.items if isinstance(item, AMIMessage)]


def settings(port: int, **overrides: object) -> AMISettings:
    base: dict[str, object] = {"backoff_min": 0.01, "backoff_max": 0.05}
    base.update(overrides)
    return AMISettings("127.0.0.1", port, "billing", "billing", **base)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[AMIReplayServer]:
    srv = AMIReplayServer([(FIXTURES / "answered_local_call.ami").read_bytes()])
    yield srv
    await srv.close()


async def test_given_wrong_secret_when_login_then_authentication_error(
    server: AMIReplayServer,
) -> None:
    port = await server.start()
    client = AMIClient(
        AMISettings("127.0.0.1", port, "billing", "wrong"), Inbox(), switch_id="pbx-1"
    )
    await client.connect()
    with pytest.raises(AMIAuthenticationError, match="Authentication failed"):
        await client.login()
    await client.close()


async def test_given_server_closes_before_answer_when_login_then_connection_lost() -> None:
    srv = AMIReplayServer([b""], answer_login=False)
    port = await srv.start()
    client = AMIClient(settings(port), Inbox(), switch_id="pbx-1")
    await client.connect()
    with pytest.raises(AMIConnectionLost):
        await client.login()
    await client.close()
    await srv.close()


async def test_given_no_server_when_connect_then_connection_lost() -> None:
    srv = AMIReplayServer([])
    port = await srv.start()
    await srv.close()
    client = AMIClient(settings(port), Inbox(), switch_id="pbx-1")
    with pytest.raises(AMIConnectionLost):
        await client.connect()
    await client.close()


async def test_given_logged_in_when_actions_sent_then_each_response_matched_by_action_id() -> None:
    def responder(action: Action) -> bytes | None:
        if action.get("Action") == "Fail":
            return response(action, "Response: Error\r\nMessage: No such thing\r\n")
        return response(action, f"Response: Success\r\nEcho: {action.get('Value', '')}\r\n")

    srv = AMIReplayServer([b""], responder=responder)
    port = await srv.start()
    client = AMIClient(settings(port), Inbox(), switch_id="pbx-1")
    await client.connect()
    await client.login()
    replies = await asyncio.gather(*(client.send_action("Echo", Value=str(i)) for i in range(20)))
    assert [r["Echo"] for r in replies] == [str(i) for i in range(20)]
    ids = [a["ActionID"] for a in srv.received]
    assert len(set(ids)) == len(ids)
    with pytest.raises(AMIActionError, match="No such thing"):
        await client.send_action("Fail")
    hangup = await client.hangup("Local/100@test-00000000;2")
    assert hangup["Response"] == "Success"
    assert srv.received[-1]["Channel"] == "Local/100@test-00000000;2"
    assert srv.received[-1]["Cause"] == "16"
    await client.close()
    await srv.close()


async def test_given_core_show_channels_when_called_then_list_items_collected() -> None:
    recorded = (FIXTURES / "core_show_channels.ami").read_bytes()
    _, _, messages = split_recording(recorded)
    listing = [m for m in messages if b"ActionID: core_show_channels-05\r\n" in m]

    def responder(action: Action) -> bytes | None:
        if action.get("Action") == "CoreShowChannels":
            return b"".join(with_action_id(m, action["ActionID"]) for m in listing)
        return default_responder(action)

    srv = AMIReplayServer([b"Asterisk Call Manager/11.0.0\r\n"], responder=responder)
    port = await srv.start()
    inbox = Inbox()
    client = AMIClient(settings(port), inbox, switch_id="pbx-1")
    await client.connect()
    await client.login()
    channels = await client.core_show_channels()
    assert len(channels) == 12
    assert {c["Event"] for c in channels} == {"CoreShowChannel"}
    await client.close()
    await srv.close()
    assert not [i for i in inbox.messages() if i.get("Event", "").startswith("CoreShow")]


async def test_given_handler_raises_when_event_delivered_then_logged_and_stream_goes_on(
    server: AMIReplayServer,
) -> None:
    port = await server.start()
    inbox = Inbox(fail_on="Newchannel")
    client = AMIClient(settings(port), inbox, switch_id="pbx-1")
    with capture_logs() as logs:
        runner = asyncio.create_task(client.run())
        await inbox.wait_for(lambda: any(m.get("Event") == "Cdr" for m in inbox.messages()))
        await client.close()
        await runner
    failures = [e for e in logs if e["event"] == "ami.handler_failed"]
    assert [f["ami_event"] for f in failures] == ["Newchannel", "Newchannel"]
    assert all(f["switch_id"] == "pbx-1" for f in failures)
    assert len(inbox.of(SwitchConnected)) == 1


async def test_given_pending_action_when_connection_drops_then_fails_and_is_not_replayed() -> None:
    def responder(action: Action) -> bytes | None:
        return None if action.get("Action") == "Slow" else default_responder(action)

    srv = AMIReplayServer([b"Asterisk Call Manager/11.0.0\r\n"], responder=responder)
    port = await srv.start()
    inbox = Inbox()
    client = AMIClient(settings(port), inbox, switch_id="pbx-1")
    runner = asyncio.create_task(client.run())
    await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) == 1)
    pending = asyncio.create_task(client.send_action("Slow", Channel="x"))
    async with asyncio.timeout(10):
        await srv.wait_for_action("Slow")
    srv.drop_all()
    with pytest.raises(AMIConnectionLost):
        await pending
    await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) == 2)
    assert len(inbox.of(SwitchDisconnected)) == 1
    await client.close()
    await runner
    await srv.close()
    assert [a["Action"] for a in srv.received].count("Slow") == 1
    assert [a["Action"] for a in srv.received].count("Login") == 2


async def test_given_silent_switch_when_ping_times_out_then_client_reconnects() -> None:
    def responder(action: Action) -> bytes | None:
        return None if action.get("Action") == "Ping" else default_responder(action)

    srv = AMIReplayServer([b"Asterisk Call Manager/11.0.0\r\n"], responder=responder)
    port = await srv.start()
    inbox = Inbox()
    client = AMIClient(
        settings(port, ping_interval=0.02, ping_timeout=0.05), inbox, switch_id="pbx-1"
    )
    with capture_logs() as logs:
        runner = asyncio.create_task(client.run())
        await inbox.wait_for(lambda: len(inbox.of(SwitchConnected)) >= 2)
        await client.close()
        await runner
    await srv.close()
    disconnects = inbox.of(SwitchDisconnected)
    assert disconnects[0].reason == "ping timeout"  # type: ignore[union-attr]
    assert any(e["event"] == "ami.ping_timeout" for e in logs)


async def test_given_write_blocked_when_connection_reset_then_loss_reported_once() -> None:
    """The read loop fails the pending action's future, then the blocked write fails too:
    the caller gets one AMIConnectionLost and no orphan future error reaches the loop."""
    loop = asyncio.get_running_loop()
    orphans: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: orphans.append(str(ctx.get("message"))))
    accepted: list[asyncio.StreamWriter] = []

    async def silent_switch(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        accepted.append(writer)  # never reads: the client's write blocks

    server = await asyncio.start_server(silent_switch, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await AMIConnection.open("127.0.0.1", port, 5, lambda _msg: None)
        request = asyncio.create_task(conn.request("Big", "a-1", {"Data": "x" * 64_000_000}))
        async with asyncio.timeout(10):
            while not accepted or conn._writer.transport.get_write_buffer_size() == 0:  # noqa: ASYNC110 - polls the transport
                await asyncio.sleep(0.01)
        accepted[0].transport.abort()  # unread data: the kernel answers with a reset
        with pytest.raises(AMIConnectionLost):
            await request
        await conn.close()
        del request, conn
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
        server.close()
        await server.wait_closed()
    assert orphans == []
