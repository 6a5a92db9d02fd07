"""The FreeSWITCH simulator over real TCP: ESL server side, mod_xml_curl client side, calls.

The ESL client here is the project's pure parser (``connectors.esl.parser``) over raw
asyncio streams; the dialplan server is a tiny real Starlette app under uvicorn that
answers the xml_curl contract's ALLOW / DENY documents. The simulated stream is also
checked against the recorded FreeSWITCH 1.10.12 streams in ``fixtures/freeswitch``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.esl.legs import billing_leg_uuid
from connectors.esl.parser import ESLEvent, ESLFrame, ESLParser, decode_event, encode_command
from daemon.simulator import CallPlan, run_calls
from daemon.simulator.esl_server import SHOW_COLUMNS, url_encode
from daemon.simulator.freeswitch import SimulatedFreeSWITCH

PASSWORD = "ClueCon"
CDR_FIELDS = (
    "variable_billsec", "variable_billmsec", "variable_billusec", "variable_duration",
    "variable_start_epoch", "variable_answer_epoch", "variable_answer_uepoch",
    "variable_end_epoch", "variable_end_uepoch", "variable_progresssec",
    "variable_hangup_cause", "variable_hangup_cause_q850",
)  # fmt: skip  # INDEX.md fact 5: only CHANNEL_HANGUP_COMPLETE carries them


class ESLTestClient:
    """An inbound ESL client: raw streams, every frame kept in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = ESLParser()
        self.frames: list[ESLFrame] = []
        self._read = 0
        self.raw = bytearray()

    @classmethod
    async def connect(cls, port: int) -> ESLTestClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        assert (await client.next()).content_type == "auth/request"
        return client

    async def next(self) -> ESLFrame:
        while self._read == len(self.frames):
            async with asyncio.timeout(10):
                data = await self.reader.read(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.raw += data
            for item in self.parser.feed(data):
                assert isinstance(item, ESLFrame), item.describe()
                self.frames.append(item)
        self._read += 1
        return self.frames[self._read - 1]

    async def until(self, done: Callable[[ESLFrame], bool]) -> ESLFrame:
        while not done(frame := await self.next()):
            pass
        return frame

    async def command(self, text: str) -> ESLFrame:
        """Send a command; its command/reply or api/response (events before it are kept)."""
        self.writer.write(encode_command(text))
        return await self.until(lambda f: f.content_type in ("command/reply", "api/response"))

    async def login(self, events: str = "plain ALL") -> None:
        assert (await self.command(f"auth {PASSWORD}")).reply_text == "+OK accepted"
        fmt = events.split()[0]
        reply = await self.command(f"event {events}")
        assert reply.reply_text == f"+OK event listener enabled {fmt}"

    async def event(self, name: str, **match: str) -> ESLEvent:
        def wanted(frame: ESLFrame) -> bool:
            if not frame.content_type.startswith("text/event"):
                return False
            event = decode_event(frame)
            return event.name == name and all(event.get(k) == v for k, v in match.items())

        return decode_event(await self.until(wanted))

    def events(self) -> list[ESLEvent]:
        return [decode_event(f) for f in self.frames if f.content_type.startswith("text/event")]

    async def sync(self) -> None:
        """Read everything sent before the answer to a command sent now."""
        await self.command("api uuid_exists sync")


def call_events(events: list[ESLEvent], a_leg: str) -> list[ESLEvent]:
    """The channel events of one call: its A leg and every leg bridged for it."""
    return [e for e in events if e.unique_id and billing_leg_uuid(_originated(e)) == a_leg]


def _originated(event: ESLEvent) -> dict[str, str]:
    if event.get("variable_originator"):
        return {"Unique-ID": event["variable_originator"]}
    return event


def kinds(events: list[ESLEvent]) -> list[tuple[str, str]]:
    """(event name, A or B) in stream order."""
    return [(e.name, "B" if e.get("Call-Direction") == "outbound" else "A") for e in events]


def allow(context: str, max_usage: int, finish: str) -> str:
    return (
        '<document type="freeswitch/xml"><section name="dialplan" description="ratekeeper">'
        f'<context name="{context}"><extension name="ratekeeper-authorized">'
        '<condition field="destination_number" expression="^(.*)$">'
        '<action application="set" data="rk_auth_result=ALLOW"/>'
        '<action application="set" data="rk_auth_reason=OK"/>'
        f'<action application="set" data="rk_max_duration={max_usage}"/>'
        f'<action application="sched_hangup" data="+{max_usage} ALLOTTED_TIMEOUT"/>'
        f"{finish}</condition></extension></context></section></document>"
    )


def bridge(*dial_strings: str) -> str:
    return (
        '<action application="set" data="continue_on_fail=true"/>'
        f'<action application="bridge" data="{"|".join(dial_strings)}"/>'
    )


def deny(context: str, reason: str, cause: str) -> str:
    respond = '<action application="respond" data="402 Payment Required"/>'
    return (
        '<document type="freeswitch/xml"><section name="dialplan" description="ratekeeper">'
        f'<context name="{context}"><extension name="ratekeeper-denied">'
        '<condition field="destination_number" expression="^(.*)$">'
        '<action application="set" data="rk_auth_result=DENY"/>'
        f'<action application="set" data="rk_auth_reason={reason}"/>'
        f"{respond if reason == 'INSUFFICIENT_CREDIT' else ''}"
        f'<action application="hangup" data="{cause}"/>'
        "</condition></extension></context></section></document>"
    )


NOT_FOUND = (
    '<document type="freeswitch/xml"><section name="result">'
    '<result status="not found"/></section></document>'
)


class DialplanServer:
    """A real HTTP server for mod_xml_curl posts: records each form, answers a document."""

    def __init__(self, answer: Callable[[dict[str, str]], str]) -> None:
        self.answer = answer
        self.posts: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def _dialplan(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.posts.append(form)
        self.headers.append(dict(request.headers))
        return Response(self.answer(form), media_type="text/xml")

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v1/freeswitch/dialplan", self._dialplan, methods=["POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/freeswitch/dialplan?switch_id=fs1"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 (uvicorn only offers a flag)
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


async def start_sim(**options: object) -> SimulatedFreeSWITCH:
    defaults: dict[str, object] = {"xml_curl_url": "http://127.0.0.1:9/unused", "auth_mode": "none"}
    sim = SimulatedFreeSWITCH(esl_password=PASSWORD, **(defaults | options))  # type: ignore[arg-type]
    await sim.start()
    return sim


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedFreeSWITCH]:
    simulator = await start_sim()
    yield simulator
    await simulator.stop()


async def test_given_wrong_password_when_auth_then_err_invalid_notice_and_eof(
    sim: SimulatedFreeSWITCH,
) -> None:
    client = await ESLTestClient.connect(sim.esl_port)
    assert (await client.command("api status")).reply_text == "-ERR command not found"
    assert (await client.command("auth wrong")).reply_text == "-ERR invalid"
    notice = await client.next()
    assert notice.content_type == "text/disconnect-notice"
    assert notice.body.startswith(b"Disconnected, goodbye.")
    assert await client.reader.read() == b""


async def test_given_login_when_commands_then_replies_like_freeswitch(
    sim: SimulatedFreeSWITCH,
) -> None:
    client = await ESLTestClient.connect(sim.esl_port)
    await client.login("plain BACKGROUND_JOB API")
    assert (await client.command("foo bar")).reply_text == "-ERR command not found"
    assert (await client.command("api uuid_kill 00000000-0000")).body == b"-ERR No such channel!\n"
    assert (await client.command("api uuid_kill")).body == b"-USAGE: <uuid> [cause]\n"
    assert (await client.command("api nosuch x")).body == b"-ERR nosuch Command not found!\n"
    assert (await client.command("api show channels as json")).body == b'{"row_count":0}\n'
    assert (await client.command("api show channels")).body == b"\n0 total.\n"
    status = (await client.command("api status")).body.decode()
    assert status.startswith("UP 0 years, 0 days, 0 hours, ") and " is ready\n" in status
    api_event = await client.event("API", **{"API-Command": "status"})
    assert api_event["Core-UUID"] and api_event["FreeSWITCH-Hostname"] == "fs1"
    reply = await client.command("bgapi uuid_exists nosuch")
    job = reply.headers["Job-UUID"]
    assert reply.reply_text == f"+OK Job-UUID: {job}"
    done = await client.event("BACKGROUND_JOB")
    assert (done["Job-UUID"], done["Job-Command"], done["Job-Command-Arg"]) == (
        job,
        "uuid_exists",
        "nosuch",
    )
    assert done.body == "false"
    assert (await client.command("nixevent API")).reply_text == "+OK events nixed"
    assert (await client.command("noevents")).reply_text == "+OK no longer listening for events"
    assert (await client.command("exit")).reply_text == "+OK bye"
    assert (await client.next()).content_type == "text/disconnect-notice"
    assert await client.reader.read() == b""


async def test_given_xml_curl_allow_when_call_then_events_in_order_with_real_cdr() -> None:
    dialplan = DialplanServer(
        lambda form: allow(form["Hunt-Context"], 30, bridge("sofia/gateway/carrier1/15551234567"))
    )
    await dialplan.start()
    sim = await start_sim(auth_mode="xml_curl", xml_curl_url=dialplan.url)
    try:
        client = await ESLTestClient.connect(sim.esl_port)
        await client.login()
        plan = CallPlan("tenant-a", "15550001001", "15551234567", 0.05, talk_seconds=1.1)
        outcome = await sim.place_call(plan)
        await client.sync()
    finally:
        await sim.stop()
        await dialplan.stop()

    (form,) = dialplan.posts
    assert dialplan.headers[0]["user-agent"] == "freeswitch-xml/1.0"
    assert dialplan.headers[0]["content-type"] == "application/x-www-form-urlencoded"
    assert (form["hostname"], form["section"]) == ("fs1", "dialplan")
    assert form["Event-Name"] == "REQUEST_PARAMS"
    assert (form["Hunt-Context"], form["Caller-Context"]) == ("ratekeeper", "ratekeeper")
    assert form["Hunt-Destination-Number"] == form["Caller-Destination-Number"] == "15551234567"
    assert form["Caller-Caller-ID-Number"] == form["Caller-ANI"] == "15550001001"
    assert form["variable_accountcode"] == "tenant-a"
    assert billing_leg_uuid(form) == form["Unique-ID"] == outcome.a_leg_uniqueid
    assert form["Core-UUID"] and form["FreeSWITCH-Hostname"] == "fs1"
    assert (outcome.authorized, outcome.reason, outcome.max_usage) == (True, "OK", 30)
    assert (outcome.answered, outcome.dial_status, outcome.cut_by_daemon) == (True, "ANSWER", False)

    events = call_events(client.events(), outcome.a_leg_uniqueid)
    assert kinds(events) == [
        ("CHANNEL_CREATE", "A"), ("CHANNEL_CREATE", "B"),
        ("CHANNEL_PROGRESS", "B"), ("CHANNEL_PROGRESS", "A"),
        ("CHANNEL_ANSWER", "B"), ("CHANNEL_ANSWER", "A"), ("CHANNEL_BRIDGE", "A"),
        ("CHANNEL_HANGUP", "B"), ("CHANNEL_HANGUP_COMPLETE", "B"), ("CHANNEL_DESTROY", "B"),
        ("CHANNEL_UNBRIDGE", "A"),
        ("CHANNEL_HANGUP", "A"), ("CHANNEL_HANGUP_COMPLETE", "A"), ("CHANNEL_DESTROY", "A"),
    ]  # fmt: skip
    create_a, create_b = events[0], events[1]
    assert create_a["Call-Direction"] == "inbound"
    assert create_a["variable_accountcode"] == "tenant-a"
    assert create_a["Caller-Destination-Number"] == "15551234567"
    assert create_b["Call-Direction"] == "outbound" and "variable_accountcode" not in create_b
    assert create_b["variable_originator"] == create_b["Other-Leg-Unique-ID"] == create_a.unique_id
    assert create_b["Other-Type"] == "originator"
    assert create_b["Channel-Name"] == "sofia/external/15551234567"
    bridged = events[6]
    assert (bridged["Bridge-A-Unique-ID"], bridged["Bridge-B-Unique-ID"]) == (
        create_a.unique_id,
        create_b.unique_id,
    )
    assert not any(field in e for e in events[:8] for field in CDR_FIELDS)
    complete = events[12]
    assert complete.getall("Hangup-Cause") == ["NORMAL_CLEARING", "NORMAL_CLEARING"]
    assert complete["variable_rk_auth_result"] == "ALLOW"
    assert complete["variable_hangup_cause_q850"] == "16"
    answer_us = int(complete["variable_answer_uepoch"])
    end_us = int(complete["variable_end_uepoch"])
    answered_time = events[5]["Caller-Channel-Answered-Time"]  # A's CHANNEL_ANSWER
    assert complete["Caller-Channel-Answered-Time"] == str(answer_us) == answered_time
    assert int(complete["variable_billsec"]) == int(complete["variable_end_epoch"]) - int(
        complete["variable_answer_epoch"]
    )  # whole-second epochs, not billmsec rounded
    assert int(complete["variable_billmsec"]) == end_us // 1000 - answer_us // 1000
    assert int(complete["variable_billusec"]) == end_us - answer_us
    assert Decimal(int(complete["variable_billusec"])).scaleb(-6) == outcome.billsec
    assert Decimal("1.1") <= outcome.billsec < Decimal(30)
    assert sim.live_channels() == []


@pytest.mark.parametrize(
    ("document", "reason", "cause", "q850"),
    [
        (lambda f: deny(f["Hunt-Context"], "INSUFFICIENT_CREDIT", "CALL_REJECTED"),
         "INSUFFICIENT_CREDIT", "CALL_REJECTED", "21"),
        (lambda f: deny(f["Hunt-Context"], "NO_RATE", "NO_ROUTE_DESTINATION"),
         "NO_RATE", "NO_ROUTE_DESTINATION", "3"),
        (lambda f: NOT_FOUND, "NOT_FOUND", "NO_ROUTE_DESTINATION", "3"),
    ],
)  # fmt: skip
async def test_given_xml_curl_denial_when_call_then_a_hung_up_with_cause_and_no_b_leg(
    document: Callable[[dict[str, str]], str], reason: str, cause: str, q850: str
) -> None:
    dialplan = DialplanServer(document)
    await dialplan.start()
    sim = await start_sim(auth_mode="xml_curl", xml_curl_url=dialplan.url)
    try:
        client = await ESLTestClient.connect(sim.esl_port)
        await client.login()
        outcome = await sim.place_call(CallPlan("tenant-b", "15550002002", "19005550199", 0, 1))
        await client.sync()
    finally:
        await sim.stop()
        await dialplan.stop()
    assert (outcome.authorized, outcome.reason, outcome.answered) == (False, reason, False)
    events = call_events(client.events(), outcome.a_leg_uniqueid)
    assert kinds(events) == [
        ("CHANNEL_CREATE", "A"), ("CHANNEL_HANGUP", "A"),
        ("CHANNEL_HANGUP_COMPLETE", "A"), ("CHANNEL_DESTROY", "A"),
    ]  # fmt: skip
    complete = events[2]
    assert (complete["Hangup-Cause"], complete["variable_hangup_cause_q850"]) == (cause, q850)
    assert (complete["variable_billsec"], complete["Caller-Channel-Answered-Time"]) == ("0", "0")


async def test_given_allow_with_short_limit_when_call_talks_longer_then_switch_cuts_it() -> None:
    dialplan = DialplanServer(lambda f: allow(f["Hunt-Context"], 1, bridge("sofia/gateway/c/1")))
    await dialplan.start()
    sim = await start_sim(auth_mode="xml_curl", xml_curl_url=dialplan.url)
    try:
        client = await ESLTestClient.connect(sim.esl_port)
        await client.login("plain CHANNEL_HANGUP_COMPLETE")
        outcome = await sim.place_call(CallPlan("tenant-a", "15550001001", "15551230007", 0, 30))
        await client.sync()
    finally:
        await sim.stop()
        await dialplan.stop()
    assert (outcome.limited_by_switch, outcome.cut_by_daemon, outcome.max_usage) == (True, False, 1)
    assert outcome.billsec < Decimal(2)  # whole-second scheduler: floor(now) + 1 + tick phase
    a_leg, b_leg = (
        next(e for e in client.events() if e.get("Call-Direction") == side)
        for side in ("inbound", "outbound")
    )
    assert [e.get("Call-Direction") for e in client.events()] == ["inbound", "outbound"]
    assert a_leg["Hangup-Cause"] == b_leg["Hangup-Cause"] == "ALLOTTED_TIMEOUT"
    assert a_leg["variable_hangup_cause_q850"] == "16"


async def test_given_live_call_when_show_channels_and_uuid_kill_then_listed_and_cut(
    sim: SimulatedFreeSWITCH,
) -> None:
    client = await ESLTestClient.connect(sim.esl_port)
    await client.login("json CHANNEL_BRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE")
    plan = CallPlan("tenant-a", "15550001001", "15551000005", ring_seconds=0, talk_seconds=30)
    task = asyncio.create_task(sim.place_call(plan))
    bridged = await client.event("CHANNEL_BRIDGE")
    a_leg, b_leg = bridged["Bridge-A-Unique-ID"], bridged["Bridge-B-Unique-ID"]
    listed = (await client.command("api show channels as json")).body
    assert listed.endswith(b"}\n")
    shown = json.loads(listed)
    assert shown["row_count"] == 2 and [row["uuid"] for row in shown["rows"]] == [a_leg, b_leg]
    assert all(list(row) == SHOW_COLUMNS for row in shown["rows"])
    assert all(isinstance(value, str) for row in shown["rows"] for value in row.values())
    assert [row["accountcode"] for row in shown["rows"]] == ["tenant-a", ""]
    assert [row["callstate"] for row in shown["rows"]] == ["ACTIVE", "ACTIVE"]
    assert (await client.command(f"api uuid_getvar {a_leg} accountcode")).body == b"tenant-a"
    assert (await client.command(f"api uuid_exists {b_leg}")).body == b"true"
    reply = await client.command(f"api uuid_kill {a_leg} CALL_REJECTED")
    assert reply.body == b"+OK\n"
    before_reply = client.frames[: client.frames.index(reply)]
    assert not [f for f in before_reply if b'"Event-Name":"CHANNEL_HANGUP' in f.body]
    outcome = await task
    await client.sync()
    hangups = [(e.name, e.unique_id) for e in client.events() if "HANGUP" in e.name]
    assert hangups == [
        ("CHANNEL_HANGUP", a_leg), ("CHANNEL_HANGUP", b_leg),
        ("CHANNEL_HANGUP_COMPLETE", a_leg), ("CHANNEL_HANGUP_COMPLETE", b_leg),
    ]  # fmt: skip  # the killed A leg first, like the uuid_kill_cutoff trace
    complete = client.events()[-2]
    assert complete.getall("Hangup-Cause") == ["CALL_REJECTED", "CALL_REJECTED"]
    assert complete["variable_hangup_cause_q850"] == "21"
    assert (outcome.cut_by_daemon, outcome.answered, outcome.authorized) == (True, True, None)
    assert outcome.billsec == Decimal(int(complete["variable_billusec"])).scaleb(-6)
    assert (await client.command(f"api uuid_exists {a_leg}")).body == b"false"


@pytest.mark.parametrize(
    ("outcome", "dial_status", "b_cause", "a_cause"),
    [
        ("busy", "BUSY", "USER_BUSY", "USER_BUSY"),
        ("noanswer", "NOANSWER", "NO_ANSWER", "NORMAL_CLEARING"),  # NO_ANSWER continues
        ("congestion", "CONGESTION", "NORMAL_CIRCUIT_CONGESTION", "NORMAL_CIRCUIT_CONGESTION"),
    ],
)
async def test_given_carrier_failure_when_bare_bridge_then_b_first_and_a_not_billed(
    sim: SimulatedFreeSWITCH, outcome: str, dial_status: str, b_cause: str, a_cause: str
) -> None:
    client = await ESLTestClient.connect(sim.esl_port)
    await client.login("plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    plan = CallPlan("tenant-b", "15550002002", "15553330004", 0.05, 3, outcome=outcome)  # type: ignore[arg-type]
    result = await sim.place_call(plan)
    await client.sync()
    events = client.events()
    assert [e.name for e in events] == ["CHANNEL_HANGUP_COMPLETE"] * 2
    assert [e["Hangup-Cause"] for e in events] == [b_cause, a_cause]
    assert [e["Call-Direction"] for e in events] == ["outbound", "inbound"]
    assert all(e["Caller-Channel-Answered-Time"] == "0" == e["variable_billsec"] for e in events)
    assert (result.answered, result.dial_status, result.billsec) == (False, dial_status, Decimal(0))


async def test_given_park_mode_when_daemon_transfers_or_kills_then_continued_or_denied() -> None:
    sim = await start_sim(auth_mode="park")
    try:
        client = await ESLTestClient.connect(sim.esl_port)
        await client.login("plain CHANNEL_CREATE CHANNEL_PARK CHANNEL_HANGUP_COMPLETE")
        plan = CallPlan("tenant-a", "1000", "15551234567", 0, 0.2)
        ok = asyncio.create_task(sim.place_call(plan))
        parked = await client.event("CHANNEL_PARK")
        assert (parked["Answer-State"], parked["Call-Direction"]) == ("ringing", "inbound")
        assert parked["Caller-Context"] == "authhold"
        assert parked["variable_accountcode"] == "tenant-a"
        assert parked["Caller-Destination-Number"] == "15551234567"
        transfer = f"api uuid_transfer {parked.unique_id} 15551234567 XML default"
        assert (await client.command(transfer)).body == b"+OK\n"
        continued = await ok
        bad = asyncio.create_task(sim.place_call(CallPlan("tenant-b", "2000", "19005550199", 0, 1)))
        barred = await client.event("CHANNEL_PARK", **{"variable_accountcode": "tenant-b"})
        killed = await client.command(f"api uuid_kill {barred.unique_id} OUTGOING_CALL_BARRED")
        assert killed.body == b"+OK\n"
        denied = await bad
        await client.sync()
    finally:
        await sim.stop()
    assert (continued.authorized, continued.reason, continued.answered) == (True, "OK", True)
    assert continued.a_leg_uniqueid == parked.unique_id
    completes = [e for e in client.events() if e.name == "CHANNEL_HANGUP_COMPLETE"]
    (done,) = [e for e in completes if e.unique_id == parked.unique_id]
    assert (done["Caller-Context"], done["Caller-Profile-Index"]) == ("default", "2")
    assert done["variable_transfer_source"].endswith(":bl_xfer:15551234567/default/XML")
    assert int(done["variable_billsec"]) <= int(done["variable_duration"])
    assert (denied.authorized, denied.answered) == (False, False)
    assert denied.reason == "OUTGOING_CALL_BARRED"
    barred_events = [e for e in client.events() if e.unique_id == barred.unique_id]
    assert [e.name for e in barred_events] == [
        "CHANNEL_CREATE",
        "CHANNEL_PARK",
        "CHANNEL_HANGUP_COMPLETE",
    ]
    assert barred_events[-1]["variable_hangup_cause_q850"] == "52"
    assert not [e for e in client.events() if e.get("variable_originator") == barred.unique_id]


async def test_given_park_without_decision_when_timeout_then_recovery_on_timer_expire() -> None:
    sim = await start_sim(auth_mode="park", park_timeout=0.1)
    try:
        client = await ESLTestClient.connect(sim.esl_port)
        await client.login("plain CHANNEL_HANGUP_COMPLETE")
        outcome = await sim.place_call(CallPlan("tenant-a", "1000", "15551234567", 0, 1))
        complete = await client.event("CHANNEL_HANGUP_COMPLETE")
    finally:
        await sim.stop()
    assert (outcome.authorized, outcome.reason) == (False, "PARK_TIMEOUT")
    assert complete["Hangup-Cause"] == "RECOVERY_ON_TIMER_EXPIRE"
    assert complete["variable_hangup_cause_q850"] == "102"


async def test_given_live_call_when_switch_shuts_down_then_hangups_then_notice_then_eof(
    sim: SimulatedFreeSWITCH,
) -> None:
    client = await ESLTestClient.connect(sim.esl_port)
    await client.login("plain CHANNEL_BRIDGE CHANNEL_HANGUP_COMPLETE SHUTDOWN")
    other = await ESLTestClient.connect(sim.esl_port)
    await other.login("plain HEARTBEAT")
    task = asyncio.create_task(sim.place_call(CallPlan("tenant-a", "1000", "1060", 0, 30)))
    await client.event("CHANNEL_BRIDGE")
    await sim.shutdown()
    outcome = await task
    notice = await client.until(lambda f: f.content_type == "text/disconnect-notice")
    assert notice.body == b"The system is being shut down.\n"
    assert await client.reader.read() == b""
    names = [(e.name, e.get("Hangup-Cause", "")) for e in client.events()]
    assert names[1:] == [
        ("CHANNEL_HANGUP_COMPLETE", "SYSTEM_SHUTDOWN"),
        ("CHANNEL_HANGUP_COMPLETE", "SYSTEM_SHUTDOWN"),
        ("SHUTDOWN", ""),
    ]
    assert (outcome.answered, outcome.cut_by_daemon) == (True, False)
    assert (await other.until(lambda f: f.content_type == "text/disconnect-notice")).body
    await sim.start()  # a restart: same port, new Core-UUID
    again = await ESLTestClient.connect(sim.esl_port)
    await again.login("plain CHANNEL_CREATE")
    assert (await again.command("api show channels as json")).body == b'{"row_count":0}\n'
    sim.server.drop_connections()
    with pytest.raises((EOFError, ConnectionError)):
        await again.next()


async def test_given_plans_when_run_calls_then_freeswitch_sim_places_them(
    sim: SimulatedFreeSWITCH,
) -> None:
    plans = [CallPlan(f"tenant-{i % 2}", "1000", "15551000001", 0, 0.02) for i in range(4)]
    outcomes = await run_calls(sim, plans, cps=200, concurrency_cap=2)
    assert len({o.a_leg_uniqueid for o in outcomes}) == 4
    assert all(o.answered and o.dial_status == "ANSWER" for o in outcomes)
    assert sim.session_counts() == (0, 8, 4)


# -- against the recorded FreeSWITCH streams --------------------------------------------


def fixture_events(fixtures_dir: Path) -> list[tuple[ESLFrame, ESLEvent]]:
    """(frame, decoded event) of every event in the recorded streams."""
    found = []
    for path in sorted((fixtures_dir / "freeswitch").glob("*.esl")):
        for frame in ESLParser().feed(path.read_bytes()):
            if isinstance(frame, ESLFrame) and frame.content_type.startswith("text/event"):
                found.append((frame, decode_event(frame)))
    return found


def test_given_fixture_values_when_encoded_then_byte_identical_to_freeswitch(
    fixtures_dir: Path,
) -> None:
    checked = 0
    for frame, _event in fixture_events(fixtures_dir):
        if frame.content_type != "text/event-plain":
            continue
        head = frame.body.split(b"\n\n", 1)[0].decode()
        for line in head.split("\n"):
            raw = line.partition(": ")[2]
            assert url_encode(unquote(raw)) == raw, line
            checked += 1
    assert checked > 30_000
    assert url_encode("a,b/c (d) 'e' %41 100%") == "a,b/c%20(d)%20'e'%20%41%20100%25"
    assert url_encode('é\t"x"+y') == "%C3%A9%09%22x%22%2By"


async def test_given_simulated_calls_when_compared_then_headers_as_in_real_streams(
    fixtures_dir: Path,
) -> None:
    real: dict[str, set[str]] = {}  # every header name seen per event name
    always: dict[str, set[str]] = {}  # the names every real event of that name carries
    for _frame, event in fixture_events(fixtures_dir):
        real.setdefault(event.name, set()).update(event)
        always[event.name] = always.get(event.name, set(event)) & set(event)
    optional = {
        f"{prefix}-{name}"
        for prefix in ("Caller", "Other-Leg")
        for name in ("Caller-ID-Name", "Orig-Caller-ID-Name", "Username", "Network-Addr")
    }
    contract = {
        "Unique-ID", "Call-Direction", "Caller-Caller-ID-Number", "Caller-ANI",
        "Caller-Destination-Number", "Caller-Context", "Core-UUID", "FreeSWITCH-Hostname",
        "Event-Sequence", "Event-Date-Timestamp", "Answer-State", "Channel-Call-UUID",
        "Other-Type", "Other-Leg-Unique-ID", "variable_originator", "variable_signal_bond",
        "variable_bridge_uuid", "Hangup-Cause", "Caller-Channel-Answered-Time",
        "Bridge-A-Unique-ID", "Bridge-B-Unique-ID", "Job-UUID", "Job-Command", *CDR_FIELDS,
    }  # fmt: skip  # the names xml_curl_contract.md and INDEX.md talk about
    sim = await start_sim()
    try:
        client = await ESLTestClient.connect(sim.esl_port)
        await client.login("json ALL")
        plain = await ESLTestClient.connect(sim.esl_port)
        await plain.login("plain ALL")
        for outcome in ("answer", "busy", "noanswer"):
            await sim.place_call(CallPlan("tenant-a", "1000", "15551234567", 0.02, 0.05, outcome))
        await client.command("bgapi status")
        await client.event("BACKGROUND_JOB")
        await plain.event("BACKGROUND_JOB")
    finally:
        await sim.stop()
    json_events, plain_events = (
        [e for e in c.events() if e.name != "API"] for c in (client, plain)
    )  # API events: each client's own commands
    assert len(json_events) > 30 and [e.name for e in json_events] == [e.name for e in plain_events]
    for json_event, plain_event in zip(json_events, plain_events, strict=True):
        assert list(json_event) == list(plain_event)  # same names, same order
        assert json_event.body == plain_event.body
    for event in plain_events:
        names = set(event)
        assert event.name in real, f"{event.name} never appears in the real streams"
        invented = {n for n in names - real[event.name] - optional if not n.startswith("variable_")}
        assert not invented, f"{event.name}: {sorted(invented)} not in the real streams"
        missing = (contract & always[event.name]) - names
        assert not missing, f"{event.name} lacks {sorted(missing)}"
        if event.name == "CHANNEL_HANGUP_COMPLETE":
            assert len(event.getall("Hangup-Cause")) == 2
    raw = bytes(plain.raw)
    assert b"\nContent-Length: " in raw and b"\r" not in raw
    for frame in plain.frames:
        if frame.content_type == "text/event-plain":
            assert list(frame.headers) == ["Content-Length", "Content-Type"]
