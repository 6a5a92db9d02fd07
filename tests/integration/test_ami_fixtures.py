"""Every recorded Asterisk stream, replayed over real TCP, yields exactly its billing facts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connectors.ami.client import AMIClient, AMISettings, ClientItem
from connectors.ami.parser import AMIMessage
from connectors.ami.translator import AMITranslator
from connectors.events import CallEnded, Event, SwitchConnected
from tests.support.ami_replay import AMIReplayServer

MILLI = Decimal("0.001")


@dataclass
class Case:
    name: str
    streams: list[bytes]
    facts: list[dict[str, object]]


def load_cases(fixtures: Path) -> list[Case]:
    cases = []
    for meta_path in sorted((fixtures / "asterisk").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        facts_by_file = meta["billing_facts"]
        if isinstance(facts_by_file, dict):
            files = [f for f in meta["parts"] if facts_by_file[f] or "admin" not in f]
            facts = [fact for f in files for fact in facts_by_file[f]]
        else:
            files, facts = [meta["recording"]["file"]], facts_by_file
        streams = [(fixtures / "asterisk" / f).read_bytes() for f in files]
        cases.append(Case(meta_path.stem, streams, facts))
    return cases


def _fixtures() -> Path:
    from tests.conftest import _fixtures_dir

    return _fixtures_dir()


CASES = load_cases(_fixtures())


def expected(fact: dict[str, object]) -> tuple[object, ...]:
    billsec = Decimal(repr(fact["billsec_exact"])).quantize(MILLI)
    cause = fact["hangup_cause"]["a_leg"][0]  # type: ignore[index]
    status = fact["dialstatus"] or ("ANSWER" if fact["answered"] else "NOANSWER")
    return (
        fact["linkedid"], fact["accountcode"], fact["caller"], fact["callee"],
        fact["answered"], status, billsec, cause,
    )  # fmt: skip


def observed(event: CallEnded) -> tuple[object, ...]:
    return (
        event.call_id, event.account, event.caller, event.callee,
        event.answered, event.disposition, event.billsec.quantize(MILLI), event.cause,
    )  # fmt: skip


class Collector:
    """Feeds client items through a translator and records every event."""

    def __init__(self) -> None:
        self.translator = AMITranslator("pbx-1")
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    async def __call__(self, item: ClientItem) -> None:
        if isinstance(item, AMIMessage):
            self.events.extend(self.translator.feed(item))
        else:
            self.events.append(item)
        self.changed.set()

    def ended(self) -> list[CallEnded]:
        return [e for e in self.events if isinstance(e, CallEnded)]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(15):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def replay(
    streams: list[bytes], chunking: str, until: int, **server_args: object
) -> Collector:
    server = AMIReplayServer(streams, chunking=chunking, **server_args)  # type: ignore[arg-type]
    port = await server.start()
    collector = Collector()
    settings = AMISettings("127.0.0.1", port, "billing", "billing", backoff_min=0.01)
    client = AMIClient(settings, collector, switch_id="pbx-1")
    runner = asyncio.create_task(client.run())
    try:
        await collector.wait_for(lambda: len(collector.ended()) >= until)
        await asyncio.sleep(0.05)  # anything extra (a duplicate) would show up here
    finally:
        await client.close()
        await runner
        await server.close()
    return collector


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("chunking", ["messages", "random"])
async def test_given_recorded_stream_when_replayed_then_call_ended_equals_billing_facts(
    case: Case, chunking: str
) -> None:
    collector = await replay(case.streams, chunking, until=len(case.facts))
    got = sorted(observed(e) for e in collector.ended())
    assert got == sorted(expected(f) for f in case.facts)
    connects = [e for e in collector.events if isinstance(e, SwitchConnected)]
    assert len(connects) == len(case.streams)


async def test_given_one_byte_chunks_when_replayed_then_same_events_as_whole_messages() -> None:
    case = next(c for c in CASES if c.name == "answered_local_call")
    whole = await replay(case.streams, "messages", until=len(case.facts))
    bytewise = await replay(case.streams, "bytes", until=len(case.facts))
    assert bytewise.events == whole.events


async def test_given_malformed_frame_when_replayed_then_error_logged_and_calls_go_on() -> None:
    case = next(c for c in CASES if c.name == "core_show_channels")
    stream = case.streams[0]
    cut = stream.index(b"Event: Newchannel")
    broken = stream[:cut] + b"Event: Bogus\r\nthis line has no colon\r\n\r\n" + stream[cut:]
    with capture_logs() as logs:
        collector = await replay([broken], "random", until=len(case.facts))
    assert sorted(observed(e) for e in collector.ended()) == sorted(map(expected, case.facts))
    errors = [entry for entry in logs if entry["event"] == "ami.parse_error"]
    assert len(errors) == 1
    assert errors[0]["line"] == "this line has no colon"
    assert errors[0]["line_number"] == stream[:cut].count(b"\r\n") + 2


async def test_given_cut_mid_frame_when_replayed_then_calls_kept_and_leftover_logged() -> None:
    case = next(c for c in CASES if c.name == "busy_and_congestion")
    stream = case.streams[0]
    first_call_end = stream.index(b"1795630712.14")  # the second call starts after here
    cut = stream.index(b"Event: Newexten", first_call_end) + 25
    with capture_logs() as logs:
        collector = await replay([stream[:cut]], "messages", until=1, keep_open=False)
    assert [e.call_id for e in collector.ended()] == ["1795630711.10"]
    truncated = [entry for entry in logs if entry["event"] == "ami.truncated_stream"]
    assert truncated
    assert truncated[0]["leftover_bytes"] == 25
