"""The recorded agent streams, replayed over real TCP through the real clients, yield
exactly their seat facts (and, fed to the call translators alongside, their call facts).

Seat facts read from the streams (agent_seats.ami, callcenter_agents.esl):

* Asterisk: ``Agent:1001`` (app_agent_pool; its queue member ``Local/1001@agent-request/n``
  has ``StateInterface: Agent:1001``) is present from its ``QueueMemberAdded``
  (1795630748.361765; its ``AgentLogin`` follows at .361794) until its last presence ends,
  the ``QueueMemberRemoved`` at 1795630767.885014 (its ``AgentLogoff`` came first, at
  .884995). ``Local/1002@agents/n`` is present from its ``QueueMemberAdded``
  (1795630748.864503) to its ``QueueMemberRemoved`` (1795630768.387203), paused with
  reason ``break`` in between (1795630749.365497 -> 1795630750.367872). Peak: 2 seats.
* FreeSWITCH: ``1001@default`` goes Logged Out (already absent) -> Available
  (1795631006.996393) -> On Break -> Available -> Logged Out (1795631017.336377): one
  session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.ami.client import AMIClient, AMISettings
from connectors.ami.client import ClientItem as AMIItem
from connectors.ami.parser import AMIMessage
from connectors.ami.seats import AMISeatTranslator
from connectors.ami.translator import AMITranslator
from connectors.esl.client import ClientItem as ESLItem
from connectors.esl.client import ESLClient, ESLSettings
from connectors.esl.parser import ESLEvent
from connectors.esl.seats import ESLSeatTranslator
from connectors.esl.translator import ESLTranslator
from connectors.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    CallEnded,
    Event,
    Marker,
    SwitchConnected,
    SwitchDisconnected,
)
from connectors.seat_tenants import SeatTenantRules
from tests.support.ami_replay import AMIReplayServer
from tests.support.esl_replay import ESLReplayServer
from tests.support.esl_server import ESLTestServer

MILLI = Decimal("0.001")
AGENT = "Agent:1001"
LOCAL = "Local/1002@agents/n"
FS_AGENT = "1001@default"
# No rule names Agent:1001: its tenant comes from the queue (and its login's AccountCode).
AMI_RULES = SeatTenantRules(by_queue={"support": "tenant-a"})
ESL_RULES = SeatTenantRules(by_domain={"default": "tenant-a"})

AMI_SEATS = [
    AgentLoggedIn("pbx-1", "tenant-a", AGENT, Decimal("1795630748.361765"), "Agent 1001"),
    AgentLoggedIn("pbx-1", "tenant-a", LOCAL, Decimal("1795630748.864503"), "Seat 1002 (tenant-a)"),
    AgentLoggedOut("pbx-1", "tenant-a", AGENT, Decimal("1795630767.885014")),
    AgentLoggedOut("pbx-1", "tenant-a", LOCAL, Decimal("1795630768.387203")),
]
ESL_SEATS = [
    AgentLoggedIn("fs-1", "tenant-a", FS_AGENT, Decimal("1795631006.996393")),
    AgentLoggedOut("fs-1", "tenant-a", FS_AGENT, Decimal("1795631017.336377")),
]


def peak(events: Sequence[Event]) -> int:
    """The most seats present at once along a seat event sequence."""
    present: set[str] = set()
    most = 0
    for event in events:
        if isinstance(event, AgentLoggedIn):
            present.add(event.agent)
        elif isinstance(event, AgentLoggedOut):
            present.discard(event.agent)
        most = max(most, len(present))
    return most


def seat_events(events: Sequence[object]) -> list[Event]:
    return [e for e in events if isinstance(e, AgentLoggedIn | AgentLoggedOut)]


def ended(events: Sequence[object]) -> list[CallEnded]:
    return [e for e in events if isinstance(e, CallEnded)]


async def wait_until(changed: asyncio.Event, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not predicate():
            changed.clear()
            await changed.wait()


# -- Asterisk ------------------------------------------------------------------------


def ami_call_facts(fixtures_dir: Path) -> list[tuple[object, ...]]:
    meta = json.loads((fixtures_dir / "asterisk" / "agent_seats.json").read_text())
    facts = []
    for fact in meta["billing_facts"]:
        status = fact["dialstatus"] or ("ANSWER" if fact["answered"] else "NOANSWER")
        billsec = Decimal(repr(fact["billsec_exact"])).quantize(MILLI)
        facts.append(
            (fact["linkedid"], fact["accountcode"], fact["caller"], fact["callee"],
             fact["answered"], status, billsec, fact["hangup_cause"]["a_leg"][0])
        )  # fmt: skip
    return sorted(facts)


def ami_observed(event: CallEnded) -> tuple[object, ...]:
    return (
        event.call_id, event.account, event.caller, event.callee,
        event.answered, event.disposition, event.billsec.quantize(MILLI), event.cause,
    )  # fmt: skip


@dataclass
class AMICollector:
    """Feeds every client item to the call and the seat translator, like the daemon."""

    calls: AMITranslator = field(default_factory=lambda: AMITranslator("pbx-1"))
    seats: AMISeatTranslator = field(default_factory=lambda: AMISeatTranslator("pbx-1", AMI_RULES))
    events: list[object] = field(default_factory=list)
    list_items: list[AMIMessage] = field(default_factory=list)
    pauses: list[tuple[dict[str, str], bool]] = field(default_factory=list)
    at_listing: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, item: AMIItem) -> None:
        if isinstance(item, AMIMessage):
            self.events.extend(self.calls.feed(item))
            self.events.extend(self.seats.feed(item))
            self._observe(item)
        else:
            self.events.append(item)
        self.changed.set()

    def _observe(self, item: AMIMessage) -> None:
        name = item.get("Event", "")
        if name == "QueueMemberPause":
            self.pauses.append((self.seats.paused(LOCAL), LOCAL in self.seats.present()))
        elif name in ("Agents", "QueueMember"):  # the recorder's listings, replayed
            self.list_items.append(item)
        elif name == "QueueStatusComplete":
            # reconcile with the recorded listings at their place: they match what the
            # events said, so nothing changes
            now = Decimal("1795630751")
            self.events.extend(self.seats.adopt_listing(self.list_items, now))
            self.at_listing = {agent: self.seats.logoff_actions(agent) for agent in (AGENT, LOCAL)}


Sender = Callable[[AMIClient, AMICollector], Awaitable[None]]


async def replay_ami(
    stream: bytes, chunking: str, send: Sender | None = None
) -> tuple[AMICollector, list[dict[str, str]]]:
    server = AMIReplayServer([stream], chunking=chunking)
    port = await server.start()
    collector = AMICollector()
    settings = AMISettings("127.0.0.1", port, "billing", "billing", backoff_min=0.01)
    client = AMIClient(settings, collector, switch_id="pbx-1")
    runner = asyncio.create_task(client.run())
    try:
        await wait_until(
            collector.changed,
            lambda: len(ended(collector.events)) >= 2 and len(seat_events(collector.events)) >= 4,
        )
        if send is not None:
            await send(client, collector)
        await asyncio.sleep(0.05)  # anything extra (a duplicate) would show up here
    finally:
        await client.close()
        await runner
        await server.close()
    return collector, server.received


@pytest.mark.parametrize("chunking", ["messages", "random", "bytes"])
async def test_given_agent_seats_stream_when_replayed_then_exact_seat_and_call_facts(
    fixtures_dir: Path, chunking: str
) -> None:
    stream = (fixtures_dir / "asterisk" / "agent_seats.ami").read_bytes()
    collector, _ = await replay_ami(stream, chunking)
    assert seat_events(collector.events) == AMI_SEATS
    assert peak(seat_events(collector.events)) == 2
    assert collector.seats.present() == {}
    # paused then unpaused, present all along
    assert collector.pauses == [({"support": "break"}, True), ({}, True)]
    got = sorted(ami_observed(e) for e in ended(collector.events))
    assert got == ami_call_facts(fixtures_dir)
    assert sum(isinstance(e, SwitchConnected) for e in collector.events) == 1


async def test_given_both_seats_present_when_logoff_actions_sent_then_recorded_actions_on_wire(
    fixtures_dir: Path,
) -> None:
    stream = (fixtures_dir / "asterisk" / "agent_seats.ami").read_bytes()
    sent: list[dict[str, str]] = []

    async def send(client: AMIClient, collector: AMICollector) -> None:
        for agent in (AGENT, LOCAL):
            for action in collector.at_listing[agent]:
                fields = dict(action)
                sent.append(dict(fields))
                name = fields.pop("Action")
                await client.send_action(name, **fields)

    collector, received = await replay_ami(stream, "random", send)
    member = "Local/1001@agent-request/n"
    assert collector.at_listing == {
        AGENT: [
            {"Action": "AgentLogoff", "Agent": "1001"},
            {"Action": "QueueRemove", "Queue": "support", "Interface": member},
        ],
        LOCAL: [{"Action": "QueueRemove", "Queue": "support", "Interface": LOCAL}],
    }
    on_wire = [
        {key: value for key, value in action.items() if key != "ActionID"}
        for action in received
        if action.get("Action") in ("AgentLogoff", "QueueRemove")
    ]
    assert on_wire == sent
    recorded = recorded_ami_actions(fixtures_dir / "asterisk" / "agent_seats.actions.txt")
    assert recorded["agent_seats-09"] == sent[0]  # the recorder's AgentLogoff
    assert recorded["agent_seats-10"] == sent[2]  # the recorder's QueueRemove of seat 1002


def recorded_ami_actions(path: Path) -> dict[str, dict[str, str]]:
    """ActionID -> the other fields of every recorded action."""
    actions: dict[str, dict[str, str]] = {}
    for block in path.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            actions[fields.pop("ActionID")] = fields
    return actions


async def test_given_recorded_listings_when_adopted_after_reconnect_then_both_seats_in(
    fixtures_dir: Path,
) -> None:
    stream = (fixtures_dir / "asterisk" / "agent_seats.ami").read_bytes()
    collector, _ = await replay_ami(stream, "messages")
    assert [item.get("Event") for item in collector.list_items] == [
        "Agents",
        "QueueMember",
        "QueueMember",
    ]
    fresh = AMISeatTranslator("pbx-1", AMI_RULES)
    now = Decimal("1795630752.5")
    assert fresh.adopt_listing(collector.list_items, now) == [
        AgentLoggedIn("pbx-1", "tenant-a", AGENT, now, "Agent 1001"),
        AgentLoggedIn("pbx-1", "tenant-a", LOCAL, now, "Seat 1002 (tenant-a)"),
    ]
    no_rules = AMISeatTranslator("pbx-1", SeatTenantRules())  # the login's AccountCode
    assert no_rules.adopt_listing(collector.list_items, now) == [
        AgentLoggedIn("pbx-1", "tenant-a", AGENT, now, "Agent 1001"),
        AgentLoggedIn("pbx-1", "", LOCAL, now, "Seat 1002 (tenant-a)"),
    ]


# -- FreeSWITCH ----------------------------------------------------------------------


def esl_call_facts(fixtures_dir: Path) -> list[tuple[object, ...]]:
    meta = json.loads((fixtures_dir / "freeswitch" / "callcenter_agents.json").read_text())
    facts = []
    for call in meta["calls"]:
        bill = call["billing"]
        facts.append(
            (call["billing_leg_uuid"], bill["accountcode"], bill["caller"], bill["destination"],
             bill["answered"], Decimal(bill["billmsec"]) / 1000, str(bill["hangup_cause_q850"]))
        )  # fmt: skip
    return sorted(facts)


def esl_observed(event: CallEnded) -> tuple[object, ...]:
    return (
        event.call_id, event.account, event.caller, event.callee,
        event.answered, event.billsec, event.cause,
    )  # fmt: skip


@dataclass(frozen=True)
class Listing:
    """An agent list answer, injected into the event stream where it was answered."""

    text: str
    now: Decimal


@dataclass
class ESLCollector:
    """Feeds every client item to the call and the seat translator, like the daemon."""

    calls: ESLTranslator = field(default_factory=lambda: ESLTranslator("fs-1"))
    seats: ESLSeatTranslator = field(default_factory=lambda: ESLSeatTranslator("fs-1", ESL_RULES))
    events: list[object] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, item: ESLItem) -> None:
        if isinstance(item, ESLEvent):
            self.events.extend(self.calls.feed(item))
            self.events.extend(self.seats.feed(item))
        elif isinstance(item, Marker):
            assert isinstance(item.payload, Listing)
            self.listings.append(item.payload.text)
            self.events.extend(self.seats.adopt_listing(item.payload.text, item.payload.now))
        else:
            self.events.append(item)
        self.changed.set()


def recorded_esl_commands(path: Path) -> list[str]:
    """The commands column of a ``.commands.txt`` recording, comments left out."""
    commands = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        text = line.split("\t", 2)[2]
        if not text.startswith("#"):
            commands.append(text)
    return commands


def esl_settings(port: int, subscription: str) -> ESLSettings:
    words = tuple(subscription.split()[2:])  # what follows "event plain"
    return ESLSettings("127.0.0.1", port, "ClueCon", events=words, backoff_min=0.01)


@pytest.mark.parametrize(
    "chunking", ["whole", "random", pytest.param("bytes", marks=pytest.mark.slow)]
)
async def test_given_callcenter_stream_when_replayed_then_one_seat_session_and_call_facts(
    fixtures_dir: Path, chunking: str
) -> None:
    directory = fixtures_dir / "freeswitch"
    stream = (directory / "callcenter_agents.esl").read_bytes()
    commands = recorded_esl_commands(directory / "callcenter_agents.commands.txt")
    server = ESLReplayServer([stream], chunking=chunking, password="ClueCon")
    port = await server.start()
    collector = ESLCollector()
    client = ESLClient(esl_settings(port, commands[1]), collector, "fs-1")
    runner = asyncio.create_task(client.run())
    try:
        await wait_until(
            collector.changed,
            lambda: any(isinstance(e, SwitchDisconnected) for e in collector.events),
        )
    finally:
        await client.close()
        await runner
        await server.close()
    assert server.received[0] == commands[0]  # auth: the replay played the handshake
    assert seat_events(collector.events) == ESL_SEATS
    assert collector.seats.present() == {}
    got = sorted(esl_observed(e) for e in ended(collector.events))
    assert got == esl_call_facts(fixtures_dir)
    assert collector.calls.tracked_calls() == []


async def test_given_recorded_commands_when_client_sends_them_then_listings_and_logoff_line_up(
    fixtures_dir: Path,
) -> None:
    """The client plays the recorder: lists agents, sets statuses, originates the call
    and logs the agent off with ``logoff_command``; the switch's recorded answers come
    back in order and each listing is reconciled at its place in the event stream."""
    directory = fixtures_dir / "freeswitch"
    stream = (directory / "callcenter_agents.esl").read_bytes()
    commands = recorded_esl_commands(directory / "callcenter_agents.commands.txt")
    server = ESLTestServer(recordings=[stream], chunking="random")
    port = await server.start()
    collector = ESLCollector()
    client = ESLClient(esl_settings(port, commands[1]), collector, "fs-1")
    runner = asyncio.create_task(client.run())
    listing_at = iter([Decimal("1795631005.5"), Decimal("1795631016.5"), Decimal("1795631018.5")])
    try:
        await wait_until(
            collector.changed,
            lambda: any(isinstance(e, SwitchConnected) for e in collector.events),
        )
        for command in commands[2:]:
            if command == "exit":
                assert (await client.command("exit")).reply_text == "+OK bye"
            elif command.startswith("bgapi "):
                assert (await client.bgapi(command.removeprefix("bgapi "))).startswith("+OK ")
            elif command == f"api {collector.seats.logoff_command(FS_AGENT)}":
                assert await client.api(collector.seats.logoff_command(FS_AGENT)) == "+OK\n"
            else:
                answer = await client.api(command.removeprefix("api "))
                if command.endswith("agent list"):
                    client.inject(Listing(answer, next(listing_at)))
        await wait_until(
            collector.changed,
            lambda: any(isinstance(e, SwitchDisconnected) for e in collector.events),
        )
    finally:
        await client.close()
        await runner
        await server.close()
    assert server.received == commands  # the logoff command is the recorder's own
    assert seat_events(collector.events) == ESL_SEATS  # listings matched the events
    assert [FS_AGENT in text for text in collector.listings] == [True, True, True]
    assert sorted(esl_observed(e) for e in ended(collector.events)) == esl_call_facts(fixtures_dir)
    fresh = ESLSeatTranslator("fs-1", ESL_RULES)  # a daemon that missed the login
    now = Decimal("1795631016.5")
    assert fresh.adopt_listing(collector.listings[1], now) == [
        AgentLoggedIn("fs-1", "tenant-a", FS_AGENT, now)
    ]
