"""Every recorded FreeSWITCH stream, replayed over real TCP, yields exactly its billing facts."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.esl.parser import ESLFrame, ESLHeaders, ESLParser, encode_command
from connectors.esl.translator import ESLTranslator
from connectors.events import CallAnswered, CallEnded, CallEvent, CallStarted
from tests.support.esl_replay import ESLReplayServer, Replayed, read_events


@dataclass
class Case:
    name: str
    streams: list[bytes]
    calls: list[dict[str, Any]]


def _fixtures() -> Path:
    from tests.conftest import _fixtures_dir

    return _fixtures_dir() / "freeswitch"


def load_cases(directory: Path) -> list[Case]:
    cases = []
    for meta_path in sorted(directory.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        streams = [(directory / f"{stream}.esl").read_bytes() for stream in meta["streams"]]
        cases.append(Case(meta_path.stem, streams, meta["calls"]))
    return cases


CASES = load_cases(_fixtures())
CASE = {case.name: case for case in CASES}


def seconds(micros: int) -> Decimal | None:
    return Decimal(micros).scaleb(-6) if micros else None


def expected(call: dict[str, Any]) -> tuple[object, ...]:
    bill = call["billing"]
    return (
        call["billing_leg_uuid"], bill["accountcode"], bill["caller"], bill["destination"],
        bill["answered"], Decimal(bill["billmsec"]) / 1000, str(bill["hangup_cause_q850"]),
        seconds(bill["answer_uepoch"]), seconds(bill["end_uepoch"]),
    )  # fmt: skip


def observed(event: CallEnded) -> tuple[object, ...]:
    return (
        event.call_id, event.account, event.caller, event.callee, event.answered,
        event.billsec, event.cause, event.answered_at, event.ended_at,
    )  # fmt: skip


async def replay(case: Case, chunking: str, seed: int = 0) -> tuple[Replayed, ESLTranslator]:
    server = ESLReplayServer(case.streams, chunking=chunking, seed=seed)
    port = await server.start()
    translator = ESLTranslator("fs-1")
    result = Replayed()
    try:
        for _ in case.streams:  # one connection per recorded part, like a reconnect
            await read_events(port, translator, result)
    finally:
        await server.close()
    return result, translator


def ended(result: Replayed) -> list[CallEnded]:
    return [event for event in result.events if isinstance(event, CallEnded)]


def call_events(result: Replayed) -> list[CallEvent]:
    return [e for e in result.events if isinstance(e, CallStarted | CallAnswered | CallEnded)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("chunking", ["whole", "random"])
async def test_given_recorded_stream_when_replayed_then_call_ended_equals_billing_facts(
    case: Case, chunking: str
) -> None:
    result, translator = await replay(case, chunking)
    assert result.errors == []
    assert result.leftovers == [b""] * len(case.streams)
    assert sorted(observed(e) for e in ended(result)) == sorted(map(expected, case.calls))
    billing_legs = sorted(call["billing_leg_uuid"] for call in case.calls)
    started = [e.call_id for e in result.events if isinstance(e, CallStarted)]
    assert sorted(started) == billing_legs  # no other call, each started once
    assert translator.tracked_calls() == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_given_recorded_stream_when_replayed_then_events_per_call_in_order(
    case: Case,
) -> None:
    result, _ = await replay(case, "random", seed=7)
    events = call_events(result)
    assert len(events) == len(result.events)
    for call in case.calls:
        uid = call["billing_leg_uuid"]
        kinds = [type(e) for e in events if e.call_id == uid]
        answered = [CallAnswered] if call["billing"]["answered"] else []
        assert kinds == [CallStarted, *answered, CallEnded]
        for event in events:
            if event.call_id == uid:
                assert event.leg_id == event.channel == uid
                assert event.account == call["billing"]["accountcode"]


async def test_given_one_byte_chunks_when_replayed_then_same_events_as_whole_stream() -> None:
    case = CASE["answered_call"]  # event plain ALL: CODEC, CHANNEL_UUID, DESTROY, ...
    whole, _ = await replay(case, "whole")
    bytewise, _ = await replay(case, "bytes")
    assert bytewise.errors == []
    assert bytewise.frames == whole.frames == 54
    assert bytewise.events == whole.events
    assert len(ended(bytewise)) == 1


async def test_given_json_format_when_replayed_then_same_facts_as_plain_answered_call() -> None:
    plain, _ = await replay(CASE["answered_call"], "random")
    as_json, _ = await replay(CASE["json_format"], "random")

    def shape(result: Replayed) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for event in call_events(result):
            fields: tuple[object, ...] = (type(event).__name__, event.account)
            if isinstance(event, CallStarted):
                fields += (event.caller, event.callee)
            if isinstance(event, CallEnded):
                fields += (event.caller, event.callee, event.answered, event.cause)
                fields += (event.disposition, event.billsec > 0, event.answered_at is not None)
            out.append(fields)
        return out

    assert shape(as_json) == shape(plain)
    assert [type(e) for e in as_json.events] == [CallStarted, CallAnswered, CallEnded]


async def test_given_unanswered_calls_when_replayed_then_dispositions_from_causes() -> None:
    result, _ = await replay(CASE["no_answer_busy"], "whole")
    by_callee = {e.callee: (e.disposition, e.cause, e.billsec) for e in ended(result)}
    zero = Decimal(0)
    assert by_callee == {
        "15557770000": ("NOANSWER", "19", zero),  # call_timeout -> NO_ANSWER
        "15557770001": ("NOANSWER", "16", zero),  # leg_timeout -> ALLOTTED_TIMEOUT
        "15557770002": ("NOANSWER", "16", zero),  # bare bridge rang out -> NORMAL_CLEARING
        "15554860000": ("BUSY", "17", zero),  # 486 -> USER_BUSY
    }
    denied, _ = await replay(CASE["park_authorize"], "whole")
    assert {e.callee: e.disposition for e in ended(denied)} == {
        "15551234567": "ANSWER",
        "19005550199": "FAILED",  # uuid_kill OUTGOING_CALL_BARRED while parked
    }


async def test_given_stream_cut_mid_frame_when_replayed_then_leftover_and_call_not_ended() -> (
    None
):
    case = CASE["uuid_kill_cutoff"]
    stream = case.streams[0]
    second_create = stream.index(b"Event-Name: CHANNEL_CREATE", stream.index(b"80ac81d9"))
    cut = stream.index(b"Event-Name: CHANNEL_HANGUP_COMPLETE", second_create) + 10
    result, translator = await replay(Case("cut", [stream[:cut]], []), "random")
    assert [e.callee for e in ended(result)] == ["1060"]  # only the first call ended
    assert len(translator.tracked_calls()) == 1
    frame_start = stream.rindex(b"Content-Length: ", 0, cut)
    assert result.leftovers == [stream[frame_start:cut]]


@pytest.mark.parametrize(
    ("password", "reply"), [("ClueCon", "+OK accepted"), ("wrong", "-ERR invalid")]
)
async def test_given_replay_with_password_when_client_authenticates_then_handshake_played(
    password: str, reply: str
) -> None:
    server = ESLReplayServer([CASE["reconnect"].streams[1]], password="ClueCon")
    port = await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        parser = ESLParser()
        assert parser.feed(await reader.readuntil(b"\n\n"))[0] == ESLFrame(
            ESLHeaders({"Content-Type": "auth/request"}), b""
        )
        writer.write(encode_command(f"auth {password}"))
        items = parser.feed(await reader.read())  # the server closes after its stream
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()
    first = items[0]
    assert isinstance(first, ESLFrame) and first.reply_text == reply
    assert len(items) == (1 if password == "wrong" else 16)  # denied: nothing else is sent
    assert server.received[0] == f"auth {password}"
