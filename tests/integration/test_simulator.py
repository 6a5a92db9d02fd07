"""The Asterisk simulator over real TCP: AMI server side, FastAGI client side, call model.

A tiny AMI client and a tiny FastAGI server live here (raw asyncio streams), so the
simulator is checked against the protocol itself and against the recorded Asterisk 22
traces in ``fixtures/asterisk``, not against another component of ratekeeper.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.simulator import (
    CallOutcome,
    CallPlan,
    SimulatedAsterisk,
    SimulatorConfigError,
    make_plans,
    run_calls,
)

Message = list[tuple[str, str]]
USER, SECRET = "billing", "s3cret"


def as_dict(message: Message) -> dict[str, str]:
    """First value of every header."""
    out: dict[str, str] = {}
    for key, value in message:
        out.setdefault(key, value)
    return out


def parse_stream(data: bytes) -> list[Message]:
    """Plain parser: drop the banner line, split on blank lines, ``Key: Value`` pairs."""
    _, _, rest = data.partition(b"\r\n")
    messages = []
    for block in rest.decode().split("\r\n\r\n"):
        if block:
            messages.append([tuple(line.split(": ", 1)) for line in block.split("\r\n")])
    return messages  # type: ignore[return-value]


class AmiClient:
    """A minimal AMI client: raw streams, one message at a time, keeps every byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.raw = bytearray()
        self._seq = 0

    @classmethod
    async def connect(cls, port: int) -> AmiClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        banner = await reader.readline()
        client.raw += banner
        assert banner == b"Asterisk Call Manager/11.0.0\r\n"
        return client

    def send(self, action: str, **fields: str) -> str:
        self._seq += 1
        action_id = f"t-{self._seq}"
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{key}: {value}" for key, value in fields.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    async def read(self) -> Message:
        async with asyncio.timeout(10):
            block = await self.reader.readuntil(b"\r\n\r\n")
        self.raw += block
        text = block.decode()[:-4]
        return [(k, v) for k, _, v in (line.partition(": ") for line in text.split("\r\n"))]

    async def read_until(self, done: Callable[[dict[str, str]], bool]) -> list[Message]:
        messages = []
        while True:
            message = await self.read()
            messages.append(message)
            if done(as_dict(message)):
                return messages

    async def login(self, secret: str = SECRET) -> dict[str, str]:
        action_id = self.send("Login", Username=USER, Secret=secret, Events="on")
        reply = as_dict(await self.read())
        assert reply["ActionID"] == action_id
        if reply["Response"] == "Success":
            await self.read_until(lambda m: m.get("Event") == "SuccessfulAuth")
        return reply

    async def sync(self) -> list[Message]:
        """Everything before the answer to a Ping sent now."""
        action_id = self.send("Ping")
        return await self.read_until(lambda m: m.get("ActionID") == action_id)

    async def close(self) -> None:
        self.writer.close()


class FakeFastAgi:
    """A FastAGI server that reads the agi_* block, sends fixed commands, then closes."""

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands
        self.requests: list[dict[str, str]] = []
        self.replies: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env: dict[str, str] = {}
        while line := (await reader.readline()).decode().strip():
            key, _, value = line.partition(": ")
            env[key] = value
        self.requests.append(env)
        for command in self.commands:
            writer.write(f"{command}\n".encode())
            self.replies.append((await reader.readline()).decode().strip())
        writer.close()
        await writer.wait_closed()


async def start_sim(commands: list[str]) -> tuple[SimulatedAsterisk, FakeFastAgi]:
    agi = FakeFastAgi(commands)
    await agi.start()
    sim = SimulatedAsterisk(
        ami_username=USER, ami_secret=SECRET, fastagi_host="127.0.0.1", fastagi_port=agi.port
    )
    await sim.start()
    return sim, agi


ALLOW_2S = ["SET VARIABLE AUTH_RESULT ALLOW", "SET VARIABLE AUTH_MAXSECS 2"]
ALLOW = ["SET VARIABLE AUTH_RESULT ALLOW", 'SET VARIABLE AUTH_REASON "OK"']


@pytest.fixture
async def allow_sim() -> AsyncIterator[tuple[SimulatedAsterisk, FakeFastAgi]]:
    sim, agi = await start_sim(ALLOW)
    yield sim, agi
    await sim.stop()
    await agi.stop()


def call_events(messages: list[Message], outcome: CallOutcome) -> list[dict[str, str]]:
    """The events of one call: by Linkedid, and its Cdrs by UniqueID."""
    events = [as_dict(m) for m in messages if m and m[0][0] == "Event"]
    uids = {e["Uniqueid"] for e in events if e.get("Linkedid") == outcome.linkedid}
    return [
        e
        for e in events
        if e.get("Linkedid") == outcome.linkedid
        or e.get("DestLinkedid") == outcome.linkedid
        or (e["Event"] == "Cdr" and e["UniqueID"] in uids)
    ]


def index_of(events: list[dict[str, str]], event: str, **match: str) -> int:
    for i, e in enumerate(events):
        if e["Event"] == event and all(e.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {event} {match} in {[e['Event'] for e in events]}")


async def test_given_wrong_secret_when_login_then_refused_and_closed() -> None:
    sim, agi = await start_sim([])
    try:
        client = await AmiClient.connect(sim.ami_port)
        reply = await client.login(secret="wrong")
        assert reply["Response"] == "Error"
        assert reply["Message"] == "Authentication failed"
        assert await client.reader.read() == b""  # the server closed the connection
    finally:
        await sim.stop()
        await agi.stop()


async def test_given_login_when_ping_hangup_unknown_then_replies_carry_action_id(
    allow_sim: tuple[SimulatedAsterisk, FakeFastAgi],
) -> None:
    sim, _ = allow_sim
    client = await AmiClient.connect(sim.ami_port)
    assert (await client.login())["Message"] == "Authentication accepted"
    ping_id = client.send("Ping")
    pong = as_dict(await client.read())
    assert (pong["Response"], pong["Ping"], pong["ActionID"]) == ("Success", "Pong", ping_id)
    assert Decimal(pong["Timestamp"]) > 0 and len(pong["Timestamp"].split(".")[1]) == 6
    hangup_id = client.send("Hangup", Channel="Local/nobody@outbound-00000000;2")
    nosuch = as_dict(await client.read())
    assert (nosuch["Response"], nosuch["Message"], nosuch["ActionID"]) == (
        "Error",
        "No such channel",
        hangup_id,
    )
    other_id = client.send("Originate", Channel="Local/1@x")
    unknown = as_dict(await client.read())
    assert (unknown["Message"], unknown["ActionID"]) == ("Invalid/unknown command", other_id)
    client.send("Logoff")
    assert as_dict(await client.read())["Response"] == "Goodbye"
    assert await client.reader.read() == b""


async def test_given_allow_maxsecs_2_when_call_talks_longer_then_switch_cuts_at_limit() -> None:
    sim, agi = await start_sim(ALLOW_2S)
    try:
        client = await AmiClient.connect(sim.ami_port)
        await client.login()
        plan = CallPlan("tenant-a", "15550001001", "15551230007", ring_seconds=0.05, talk_seconds=5)
        outcome = await sim.place_call(plan)
        events = call_events(await client.sync(), outcome)
    finally:
        await sim.stop()
        await agi.stop()

    (request,) = agi.requests
    assert request["agi_uniqueid"] == outcome.a_leg_uniqueid
    assert request["agi_channel"] == outcome.a_leg_channel
    assert request["agi_network_script"] == "authorize"
    assert (request["agi_arg_1"], request["agi_arg_2"], request["agi_arg_3"]) == (
        "15551230007",
        "15550001001",
        "tenant-a",
    )
    assert agi.replies == ["200 result=1", "200 result=1"]
    assert (outcome.authorized, outcome.max_usage, outcome.limited_by_switch) == (True, 2, True)
    a_leg = outcome.a_leg_channel
    assert a_leg.startswith("Local/15551230007@outbound-") and a_leg.endswith(";2")
    order = [
        index_of(events, "Newchannel", Channel=a_leg.replace(";2", ";1")),
        index_of(events, "Newchannel", Channel=a_leg),
        index_of(events, "NewAccountCode", Channel=a_leg, AccountCode="tenant-a"),
        index_of(events, "VarSet", Channel=a_leg, Variable="AUTH_RESULT", Value="ALLOW"),
        index_of(events, "VarSet", Channel=a_leg, Variable="AUTH_MAXSECS", Value="2"),
        index_of(events, "Newexten", Channel=a_leg, Application="Dial"),
        index_of(events, "DialBegin", Channel=a_leg),
        index_of(events, "DialState", Channel=a_leg, DialStatus="RINGING"),
        index_of(events, "DialEnd", Channel=a_leg, DialStatus="ANSWER"),
        index_of(events, "BridgeEnter", Channel=a_leg),
        index_of(events, "BridgeLeave", Channel=a_leg),
        index_of(events, "Cdr", Channel=a_leg),
        index_of(events, "Hangup", Channel=a_leg),
    ]
    assert order == sorted(order)
    dial = events[index_of(events, "DialBegin", Channel=a_leg)]
    assert dial["DestChannel"].startswith("Local/15551230007@carrier-")
    assert dial["DestChannel"].endswith(";1")
    assert all(e["Linkedid"] == outcome.linkedid for e in events if "Linkedid" in e)
    assert outcome.linkedid == events[0]["Uniqueid"]
    answer_ts = Decimal(events[index_of(events, "DialEnd", Channel=a_leg)]["Timestamp"])
    hangup = events[index_of(events, "Hangup", Channel=a_leg)]
    assert (hangup["Cause"], hangup["Cause-txt"]) == ("16", "Normal Clearing")
    billsec = Decimal(hangup["Timestamp"]) - answer_ts
    assert billsec == outcome.billsec
    assert Decimal(2) <= billsec < Decimal(5)  # the L(2000) limit, not the 5 s talk
    cdr = events[index_of(events, "Cdr", Channel=a_leg)]
    assert cdr["LastData"].endswith(",L(2000)")
    assert (cdr["Disposition"], cdr["DestinationChannel"]) == ("ANSWERED", dial["DestChannel"])
    assert 2 <= int(cdr["BillableSeconds"]) <= int(billsec)
    assert sum(e["Event"] == "Hangup" for e in events) == 4
    assert sim.live_channels() == []


async def test_given_live_call_when_ami_hangup_then_response_before_hangup_events(
    allow_sim: tuple[SimulatedAsterisk, FakeFastAgi],
) -> None:
    sim, _ = allow_sim
    client = await AmiClient.connect(sim.ami_port)
    await client.login()
    plan = CallPlan("tenant-a", "15550001001", "15551000005", ring_seconds=0.05, talk_seconds=30)
    task = asyncio.create_task(sim.place_call(plan))
    before = await client.read_until(
        lambda m: m.get("Event") == "DialEnd" and "Channel" in m and m["DialStatus"] == "ANSWER"
    )
    a_leg = as_dict(before[-1])["Channel"]
    hangup_id = client.send("Hangup", Channel=a_leg, Cause="16")
    outcome = await task
    after = await client.sync()
    kinds = [as_dict(m) for m in after]
    reply = next(i for i, m in enumerate(kinds) if m.get("ActionID") == hangup_id)
    assert (kinds[reply]["Response"], kinds[reply]["Message"]) == ("Success", "Channel Hungup")
    first_hangup = next(i for i, m in enumerate(kinds) if m.get("Event") == "Hangup")
    assert reply < first_hangup
    events = call_events(before + after, outcome)
    hangup = events[index_of(events, "Hangup", Channel=a_leg)]
    assert hangup["Cause"] == "16"
    assert index_of(events, "Cdr", Channel=a_leg) < index_of(events, "Hangup", Channel=a_leg)
    flags = (outcome.cut_by_daemon, outcome.answered, outcome.limited_by_switch)
    assert flags == (True, True, False)
    assert outcome.billsec == Decimal(hangup["Timestamp"]) - Decimal(
        events[index_of(events, "DialEnd", Channel=a_leg, DialStatus="ANSWER")]["Timestamp"]
    )


async def test_given_deny_when_call_then_hangup_cause_21_and_no_dial() -> None:
    sim, agi = await start_sim(
        ["SET VARIABLE AUTH_RESULT DENY", "SET VARIABLE AUTH_REASON INSUFFICIENT_CREDIT"]
    )
    try:
        client = await AmiClient.connect(sim.ami_port)
        await client.login()
        outcome = await sim.place_call(CallPlan("tenant-a", "15550001001", "15551230007", 0, 1))
        events = call_events(await client.sync(), outcome)
    finally:
        await sim.stop()
        await agi.stop()
    assert (outcome.authorized, outcome.reason, outcome.answered) == (
        False,
        "INSUFFICIENT_CREDIT",
        False,
    )
    hangup = events[index_of(events, "Hangup", Channel=outcome.a_leg_channel)]
    assert (hangup["Cause"], hangup["Cause-txt"]) == ("21", "Call Rejected")
    assert not [e for e in events if e["Event"] == "DialBegin" and "Channel" in e]
    assert not [e for e in events if e.get("Context") == "carrier"]


async def test_given_live_calls_when_core_show_channels_then_every_channel_listed(
    allow_sim: tuple[SimulatedAsterisk, FakeFastAgi],
) -> None:
    sim, _ = allow_sim
    client = await AmiClient.connect(sim.ami_port)
    await client.login()
    plan = CallPlan("tenant-b", "15550000902", "15551000902", 0, 30, authorize=False)
    task = asyncio.create_task(sim.place_call(plan))
    before = await client.read_until(lambda m: m.get("Event") == "BridgeEnter")
    listed_id = client.send("CoreShowChannels")
    reply = await client.read_until(lambda m: m.get("Event") == "CoreShowChannelsComplete")
    response = next(as_dict(m) for m in reply if as_dict(m).get("ActionID") == listed_id)
    assert (response["Response"], response["EventList"]) == ("Success", "start")
    items = [as_dict(m) for m in reply if as_dict(m).get("Event") == "CoreShowChannel"]
    complete = as_dict(reply[-1])
    assert complete["ListItems"] == str(len(items)) == "4"
    assert all(i["ActionID"] == listed_id and "Timestamp" not in i for i in items)
    assert all("Privilege" not in i for i in items)
    created = {as_dict(m)["Channel"] for m in before if as_dict(m).get("Event") == "Newchannel"}
    assert {i["Channel"] for i in items} == created
    a_leg = next(i for i in items if i["Application"] == "Dial")["Channel"]
    client.send("Hangup", Channel=a_leg)
    outcome = await task
    assert outcome.authorized is None and outcome.cut_by_daemon
    assert sim.live_channels() == []


@pytest.mark.parametrize(
    ("outcome", "dial_status", "disposition"),
    [("busy", "BUSY", "BUSY"), ("noanswer", "NOANSWER", "NO ANSWER")],
)
async def test_given_unanswered_outcome_when_call_then_dialstatus_and_no_answer(
    allow_sim: tuple[SimulatedAsterisk, FakeFastAgi],
    outcome: str,
    dial_status: str,
    disposition: str,
) -> None:
    sim, _ = allow_sim
    client = await AmiClient.connect(sim.ami_port)
    await client.login()
    plan = CallPlan("tenant-b", "15550002002", "15553330004", 0.05, 3, outcome=outcome)  # type: ignore[arg-type]
    result = await sim.place_call(plan)
    events = call_events(await client.sync(), result)
    a_leg = result.a_leg_channel
    end = events[index_of(events, "DialEnd", Channel=a_leg)]
    assert end["DialStatus"] == dial_status == result.dial_status
    assert not [e for e in events if e["Event"] in ("BridgeEnter", "BridgeCreate")]
    assert not [e for e in events if e["Event"] == "Newstate" and e["ChannelState"] == "6"]
    cdr = events[index_of(events, "Cdr", Channel=a_leg, LastApplication="Dial")]
    assert (cdr["Disposition"], cdr["BillableSeconds"], cdr["AnswerTime"]) == (disposition, "0", "")
    assert events[index_of(events, "Hangup", Channel=a_leg)]["Cause"] == "16"
    assert (result.answered, result.billsec) == (False, Decimal(0))


def fixture_header_sets(fixtures_dir: Path) -> dict[str, list[frozenset[str]]]:
    """Event name -> every header-name set seen in the real Asterisk traces."""
    seen: dict[str, list[frozenset[str]]] = {}
    for path in sorted((fixtures_dir / "asterisk").glob("*.ami")):
        for message in parse_stream(path.read_bytes()):
            if message[0][0] == "Event":
                names = frozenset(key for key, _ in message)
                if names not in seen.setdefault(message[0][1], []):
                    seen[message[0][1]].append(names)
    return seen


async def test_given_simulated_stream_when_parsed_then_headers_match_the_real_traces(
    fixtures_dir: Path,
) -> None:
    sim, agi = await start_sim(ALLOW_2S)
    plans = [
        CallPlan("tenant-a", "15550001001", "15551230007", 0.02, 0.05),
        CallPlan("tenant-a", "15550001001", "15551230008", 0.02, 0.05, authorize=False),
        CallPlan("tenant-b", "15550002002", "15553330004", 0.02, 0, outcome="busy"),
        CallPlan("tenant-b", "15550002002", "15554440004", 0.02, 0, outcome="congestion"),
        CallPlan("tenant-b", "15550002002", "15552220003", 0.02, 0, outcome="noanswer"),
    ]
    try:
        client = await AmiClient.connect(sim.ami_port)
        await client.login()
        for plan in plans:
            await sim.place_call(plan)
        task = asyncio.create_task(sim.place_call(CallPlan("a", "1", "15551000005", 0, 30)))
        await client.read_until(lambda m: m.get("Event") == "BridgeEnter")
        client.send("CoreShowChannels")
        await client.read_until(lambda m: m.get("Event") == "CoreShowChannelsComplete")
        client.send("Hangup", Channel=next(iter(sim.channels)))
        await task
        await client.sync()
    finally:
        await sim.stop()
        await agi.stop()
    real = fixture_header_sets(fixtures_dir)
    simulated = [m for m in parse_stream(bytes(client.raw)) if m[0][0] == "Event"]
    names = {m[0][1] for m in simulated}
    assert {"Newchannel", "DialBegin", "DialEnd", "BridgeEnter", "Cdr", "Hangup"} <= names
    assert {"AGIExecStart", "CoreShowChannel", "FullyBooted", "LocalBridge"} <= names
    for message in simulated:
        event, headers = message[0][1], frozenset(key for key, _ in message)
        assert event in real, f"{event} never appears in the real traces"
        assert headers in real[event], f"{event} headers {sorted(headers)} not as in the traces"
        if event not in ("FullyBooted", "CoreShowChannel", "CoreShowChannelsComplete"):
            assert len(as_dict(message)["Timestamp"].split(".")[1]) == 6


async def test_given_plans_when_run_calls_then_outcomes_in_order_and_hook_called(
    allow_sim: tuple[SimulatedAsterisk, FakeFastAgi],
) -> None:
    sim, agi = allow_sim
    plans = make_plans(6, ["tenant-a", "tenant-b"], ["15551000001"], (0.0, 0.05), rng_seed=7)
    assert plans == make_plans(6, ["tenant-a", "tenant-b"], ["15551000001"], (0.0, 0.05), 7)
    seen: list[CallOutcome] = []
    outcomes = await run_calls(sim, plans, cps=200, concurrency_cap=2, on_outcome=seen.append)
    assert len(outcomes) == len(seen) == 6
    assert sorted(o.linkedid for o in seen) == sorted(o.linkedid for o in outcomes)
    assert len({o.linkedid for o in outcomes}) == 6
    assert sorted(r["agi_arg_3"] for r in agi.requests) == sorted(p.account for p in plans)
    assert all(o.authorized and o.answered for o in outcomes)
    with pytest.raises(SimulatorConfigError, match="cps"):
        await run_calls(sim, plans, cps=0)
    with pytest.raises(SimulatorConfigError, match="talk_seconds"):
        CallPlan("a", "1", "2", 0, -1)
