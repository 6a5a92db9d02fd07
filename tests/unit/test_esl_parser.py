"""The pure ESL parser: framing, content types, URL-decoding, JSON, malformed frames."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.esl.parser import (
    ESLDecodeError,
    ESLEvent,
    ESLFrame,
    ESLHeaders,
    ESLParseError,
    ESLParser,
    decode_event,
    encode_command,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "freeswitch"
STREAMS = {path.stem: path.read_bytes() for path in sorted(FIXTURES.glob("*.esl"))}


def plain_frame(body: bytes) -> bytes:
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body


def json_frame(text: str) -> bytes:
    body = text.encode()
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body


def only_frame(data: bytes) -> ESLFrame:
    [item] = ESLParser().feed(data)
    assert isinstance(item, ESLFrame)
    return item


def frames_of(items: list[ESLFrame | ESLParseError]) -> list[ESLFrame]:
    return [item for item in items if isinstance(item, ESLFrame)]


# -- framing and content types ---------------------------------------------------------


def test_given_auth_request_and_command_reply_when_fed_then_frames_without_body() -> None:
    items = ESLParser().feed(
        b"Content-Type: auth/request\n\n"
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: 68\nJob-UUID: 68\n\n"
    )
    auth, reply = frames_of(items)
    assert auth.content_type == "auth/request" and auth.body == b""
    assert reply.content_type == "command/reply"
    assert reply.reply_text == "+OK Job-UUID: 68"  # a value may hold ": "
    assert reply.headers["Job-UUID"] == "68"


def test_given_api_response_and_disconnect_notice_when_fed_then_bodies_by_content_length() -> (
    None
):
    notice = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    data = (
        b"Content-Type: api/response\nContent-Length: 10\n\n\n0 total.\n"
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n" + notice
    )
    api, bye = frames_of(ESLParser().feed(data))
    assert (api.content_type, api.body) == ("api/response", b"\n0 total.\n")
    assert (bye.content_type, bye.body) == ("text/disconnect-notice", notice)
    assert bye.reply_text == ""


def test_given_every_recording_when_fed_whole_then_frame_counts_of_index() -> None:
    counts = {
        name: len(frames_of(ESLParser().feed(data)))
        for name, data in STREAMS.items()
    }  # fmt: skip
    assert counts == {
        "answered_call": 54, "callcenter_agents": 58, "json_format": 54,
        "no_answer_busy": 74, "park_authorize": 42, "reconnect_part1": 99,
        "reconnect_part1.conn2": 4, "reconnect_part2": 17, "sip_bridged_call": 109,
        "uuid_kill_cutoff": 42,
    }  # fmt: skip


def test_given_every_event_of_the_recordings_when_decoded_then_named_and_uuid_shaped() -> None:
    names = set()
    for data in STREAMS.values():
        for frame in frames_of(ESLParser().feed(data)):
            if frame.content_type.startswith("text/event-"):
                event = decode_event(frame)
                names.add(event.name)
                assert event.unique_id == "" or len(event.unique_id) == 36
    assert {"CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB", "CUSTOM", "CODEC"} <= names


def test_given_stray_blank_lines_between_frames_when_fed_then_skipped() -> None:
    items = ESLParser().feed(b"\n\nContent-Type: auth/request\n\n\nContent-Type: x/y\n\n")
    assert [f.content_type for f in frames_of(items)] == ["auth/request", "x/y"]
    assert not any(isinstance(item, ESLParseError) for item in items)


# -- incremental feeding ---------------------------------------------------------------


def test_given_truncated_frame_when_fed_then_leftover_kept_until_completed() -> None:
    data = plain_frame(b"Event-Name: HEARTBEAT\n\n")
    parser = ESLParser()
    assert parser.feed(data[:40]) == []
    assert parser.leftover == data[:40]
    assert parser.feed(data[40:-1]) == []
    assert parser.leftover == data[:-1]
    [frame] = parser.feed(data[-1:])
    assert isinstance(frame, ESLFrame) and parser.leftover == b""
    assert decode_event(frame).name == "HEARTBEAT"


def test_given_a_recording_fed_one_byte_at_a_time_then_same_frames_as_whole() -> None:
    data = STREAMS["park_authorize"]
    parser = ESLParser()
    items = [item for pos in range(len(data)) for item in parser.feed(data[pos : pos + 1])]
    assert items == ESLParser().feed(data)
    assert parser.leftover == b""


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(STREAMS)),
    cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=30),
)
def test_given_any_split_of_a_recording_then_same_frames_as_whole(
    name: str, cuts: list[float]
) -> None:
    data = STREAMS[name]
    points = sorted({int(cut * len(data)) for cut in cuts})
    parser = ESLParser()
    items = []
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        items.extend(parser.feed(data[start:end]))
    assert items == ESLParser().feed(data)
    assert parser.leftover == b""


# -- malformed frames ------------------------------------------------------------------

GOOD = b"Content-Type: command/reply\nReply-Text: +OK\n\n"


def test_given_line_without_separator_when_fed_then_error_names_it_and_parsing_goes_on() -> None:
    bad = b"Content-Type: command/reply\nthis line has no colon\n\n"
    items = ESLParser().feed(GOOD + bad + GOOD)
    reason = "header line without ': '"
    assert items[1] == ESLParseError(len(GOOD), "this line has no colon", reason)
    assert isinstance(items[1], ESLParseError)
    assert items[1].describe() == f"offset {len(GOOD)}: {reason}: 'this line has no colon'"
    assert frames_of(items) == frames_of(ESLParser().feed(GOOD + GOOD))


@pytest.mark.parametrize(
    ("value", "reason"),
    [("abc", "non-numeric Content-Length"), ("-5", "negative Content-Length"),
     ("", "non-numeric Content-Length"), ("1e3", "non-numeric Content-Length")],
)  # fmt: skip
def test_given_bad_content_length_when_fed_then_error_names_it_and_parsing_goes_on(
    value: str, reason: str
) -> None:
    bad = b"Content-Type: api/response\nContent-Length: " + value.encode() + b"\n\n"
    items = ESLParser().feed(GOOD + bad + GOOD)
    assert items[1] == ESLParseError(len(GOOD), f"Content-Length: {value}", reason)
    assert len(frames_of(items)) == 2


def test_given_header_block_that_is_not_a_frame_when_fed_then_error_with_excerpt() -> None:
    items = ESLParser().feed(GOOD + b"Event-Name: CODEC\n\n" + GOOD)
    error = items[1]
    assert isinstance(error, ESLParseError)
    assert error.reason == "header block without Content-Type"
    assert error.text == "Event-Name: CODEC"
    assert len(frames_of(items)) == 2


def test_given_too_short_content_length_when_fed_then_cut_event_fails_and_next_frame_parses() -> (
    None
):
    body = b"Event-Name: HEARTBEAT\nEvent-Info: System Ready\n\n"
    short = b"Content-Length: 30\nContent-Type: text/event-plain\n\n" + body
    items = ESLParser().feed(short + GOOD)
    frame, error, reply = items
    assert isinstance(frame, ESLFrame) and frame.body == body[:30]
    with pytest.raises(ESLDecodeError, match="without ': '"):
        decode_event(frame)  # "Event-Name: HEARTBEAT\nEvent-I"
    assert isinstance(error, ESLParseError) and error.offset == len(short) - len(body) + 30
    assert isinstance(reply, ESLFrame) and reply.reply_text == "+OK"


def test_given_too_long_content_length_when_stream_ends_then_bytes_left_over() -> None:
    data = b"Content-Type: api/response\nContent-Length: 99\n\n+OK\n"
    parser = ESLParser()
    assert parser.feed(data) == []
    assert parser.leftover == data


def test_given_error_in_a_later_feed_then_offset_counts_from_stream_start() -> None:
    parser = ESLParser()
    parser.feed(GOOD + GOOD[:10])
    reply, error = parser.feed(GOOD[10:] + b"garbage\n\n")
    assert isinstance(reply, ESLFrame) and reply.reply_text == "+OK"
    assert isinstance(error, ESLParseError) and error.offset == 2 * len(GOOD)


# -- text/event-plain ------------------------------------------------------------------


def test_given_url_encoded_values_when_decoded_then_decoded_once_and_names_kept() -> None:
    body = (
        b"Event-Name: CUSTOM\nEvent-Subclass: callcenter%3A%3Ainfo\n"
        b"CC-Agent: 1001%40default\nEvent-Date-Local: 2026-11-25%2018%3A22%3A00\n"
        b"variable_caller_id: %22Outbound%20Call%22%20%3Cdefault%3E\n"
        b"Job-Command-Arg: %7Borigination_uuid%3Dab,x%3Dy%7Dloopback/1000/default%20%26park()\n"
        b"variable_sip_ref: already%2520escaped\nUnique-ID: 7b43\n\n"
    )
    event = decode_event(only_frame(plain_frame(body)))
    assert event.name == "CUSTOM" and event.subclass == "callcenter::info"
    assert event["CC-Agent"] == "1001@default"
    assert event["Event-Date-Local"] == "2026-11-25 18:22:00"
    assert event["variable_caller_id"] == '"Outbound Call" <default>'
    assert event["Job-Command-Arg"] == "{origination_uuid=ab,x=y}loopback/1000/default &park()"
    assert event["variable_sip_ref"] == "already%20escaped"  # no double decoding
    assert event.unique_id == "7b43" and event.body == ""


def test_given_encoded_newlines_and_odd_percents_when_decoded_then_like_unquote() -> None:
    body = (
        b"Event-Name: CHANNEL_ANSWER\nvariable_switch_r_sdp: v%3D0%0D%0Ao%3DFS%0D%0A\n"
        b"variable_odd: 100%25 and 5% and %zz and %E2%82%AC and %FF\nvariable_eq: a=b%20c\n\n"
    )
    event = decode_event(only_frame(plain_frame(body)))
    assert event["variable_switch_r_sdp"] == "v=0\r\no=FS\r\n"
    assert event["variable_odd"] == unquote("100%25 and 5% and %zz and %E2%82%AC and %FF")
    assert event["variable_eq"] == "a=b c"


def test_given_repeated_names_when_decoded_then_first_by_index_and_all_by_getall() -> None:
    body = (
        b"Event-Name: CHANNEL_HANGUP_COMPLETE\nHangup-Cause: NORMAL_CLEARING\n"
        b"Channel-Write-Codec-Name: L16\nHangup-Cause: USER%5FBUSY\nX: 1\nX: 2\nX: 3\n\n"
    )
    event = decode_event(only_frame(plain_frame(body)))
    assert event["Hangup-Cause"] == "NORMAL_CLEARING"
    assert event.getall("Hangup-Cause") == ["NORMAL_CLEARING", "USER_BUSY"]
    assert event.getall("X") == ["1", "2", "3"] and event["X"] == "1"
    assert event.getall("Channel-Write-Codec-Name") == ["L16"]
    assert event.getall("Missing") == []
    assert list(event) == ["Event-Name", "Hangup-Cause", "Channel-Write-Codec-Name", "X"]


def test_given_background_job_when_decoded_then_inner_body() -> None:
    inner = b"-ERR NO_ANSWER\n"
    body = (
        b"Event-Name: BACKGROUND_JOB\nJob-UUID: 68\nJob-Command: originate\n"
        b"Content-Length: %d\n\n" % len(inner) + inner
    )
    event = decode_event(only_frame(plain_frame(body)))
    assert event.body == "-ERR NO_ANSWER\n"
    assert event["Job-UUID"] == "68" and event["Content-Length"] == str(len(inner))


def test_given_recorded_background_job_when_decoded_then_plus_ok_uuid() -> None:
    frames = frames_of(ESLParser().feed(STREAMS["answered_call"]))
    [job] = [decode_event(f) for f in frames if b"BACKGROUND_JOB" in f.body[:30]]
    assert job.body == "+OK 154a4a84-63de-4409-9aa2-34b02c35d34a\n"
    assert job["Job-Command-Arg"].startswith("{origination_uuid=154a4a84")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"Event-Name: X\nno separator here\n\n", "no separator here"),
        (b"Event-Name: X\nContent-Length: 10\n\nshort", "inner body is 5 bytes"),
        (b"Event-Name: X\nContent-Length: x\n\n", "non-numeric Content-Length"),
        (b"\n\n", "empty event body"),
        (b"Event-Name: X\n\ntrailing junk", "bytes after the event headers"),
    ],
)
def test_given_malformed_plain_body_when_decoded_then_decode_error_names_culprit(
    body: bytes, match: str
) -> None:
    with pytest.raises(ESLDecodeError, match=match):
        decode_event(only_frame(plain_frame(body)))


def test_given_empty_valued_header_when_decoded_then_empty_string() -> None:
    event = decode_event(only_frame(plain_frame(b"Event-Name: X\nA: \nB:\n\n")))
    assert (event["A"], event["B"]) == ("", "")


def test_given_non_event_frame_when_decoded_then_decode_error() -> None:
    with pytest.raises(ESLDecodeError, match="api/response"):
        decode_event(only_frame(b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n"))


_LETTERS = "abcdefghijklmnopqrstuvwxyz_-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAME = st.text(alphabet=_LETTERS, min_size=1).filter(
    lambda name: name != "Content-Length"  # that one announces an inner body
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAME, st.text()), min_size=1, max_size=12),
    raw=st.text(alphabet="%0aAfFgz=:+ \u20ac\x01", max_size=20),
)
def test_given_switch_encoded_values_when_decoded_then_originals_and_raw_like_unquote(
    headers: list[tuple[str, str]], raw: str
) -> None:
    lines = [f"{name}: {quote(value, safe=',/()')}" for name, value in headers]
    lines.append(f"Raw-Value: {quote(raw, safe='%=')}")  # stray % left as the switch does
    event = decode_event(only_frame(plain_frame("\n".join(lines).encode() + b"\n\n")))
    expected = ESLHeaders()
    for name, value in headers:
        expected.add(name, value)
    expected.add("Raw-Value", unquote(quote(raw, safe="%=")))
    assert dict(event) == dict(expected)
    for name in expected:
        assert event.getall(name) == expected.getall(name)


# -- text/event-json -------------------------------------------------------------------


def test_given_json_event_with_duplicate_keys_when_decoded_then_kept_and_body_split() -> None:
    text = (
        '{"Event-Name":"BACKGROUND_JOB","Hangup-Cause":"A","Hangup-Cause":"B",'
        '"Event-Subclass":"callcenter::info","Content-Length":"41","_body":"+OK x\\n"}'
    )
    event = decode_event(only_frame(json_frame(text)))
    assert isinstance(event, ESLEvent)
    assert event.getall("Hangup-Cause") == ["A", "B"] and event["Hangup-Cause"] == "A"
    assert event.subclass == "callcenter::info"  # not URL-encoded in JSON
    assert event.body == "+OK x\n" and "_body" not in event
    assert event["Content-Length"] == "41"


def test_given_json_non_string_values_when_decoded_then_json_text() -> None:
    text = '{"Event-Name":"X","n":3,"t":true,"z":null,"o":{"a":[1,"b"]}}'
    event = decode_event(only_frame(json_frame(text)))
    assert (event["n"], event["t"], event["z"]) == ("3", "true", "null")
    assert json.loads(event["o"]) == {"a": [1, "b"]}


@pytest.mark.parametrize(
    ("text", "match"),
    [('{"Event-Name": ', "bad JSON"), ('["Event-Name"]', "not an object"), ("", "bad JSON")],
)
def test_given_bad_json_body_when_decoded_then_decode_error(text: str, match: str) -> None:
    with pytest.raises(ESLDecodeError, match=match):
        decode_event(ESLFrame(ESLHeaders({"Content-Type": "text/event-json"}), text.encode()))


def test_given_recorded_json_and_plain_streams_then_same_values_for_same_event() -> None:
    def hangup_complete(name: str) -> ESLEvent:
        frames = frames_of(ESLParser().feed(STREAMS[name]))
        events = [decode_event(f) for f in frames if f.content_type.startswith("text/event")]
        return next(e for e in events if e.name == "CHANNEL_HANGUP_COMPLETE")

    plain, as_json = hangup_complete("answered_call"), hangup_complete("json_format")
    assert plain.getall("Hangup-Cause") == as_json.getall("Hangup-Cause") == ["NORMAL_CLEARING"] * 2
    assert list(as_json) == list(plain)  # same names, same order
    assert as_json["Event-Date-Local"].count(":") == plain["Event-Date-Local"].count(":") == 2


# -- headers and commands --------------------------------------------------------------


def test_given_headers_when_added_then_first_stays_and_getall_returns_copies() -> None:
    headers = ESLHeaders()
    headers.add("A", "1")
    headers.add("A", "2")
    headers.getall("A").append("mutated")
    assert headers["A"] == "1" and headers.getall("A") == ["1", "2"]


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        ("api status", b"api status\n\n"),
        ("auth ClueCon", b"auth ClueCon\n\n"),
        ("event plain CHANNEL_CREATE CUSTOM callcenter::info",
         b"event plain CHANNEL_CREATE CUSTOM callcenter::info\n\n"),
        ("bgapi originate {a=b}loopback/1000/default &park()",
         b"bgapi originate {a=b}loopback/1000/default &park()\n\n"),
        ("sendmsg 7b43\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n",
         b"sendmsg 7b43\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n\n"),
    ],
)  # fmt: skip
def test_given_command_when_encoded_then_text_and_blank_line(command: str, wire: bytes) -> None:
    assert encode_command(command) == wire


@pytest.mark.parametrize(
    "command",
    ["api status\napi fsctl shutdown", "api status\n", "api x\r", "", "sendmsg a\n\nb: c"],
)
def test_given_command_with_line_break_when_encoded_then_value_error(command: str) -> None:
    with pytest.raises(ValueError):
        encode_command(command)
