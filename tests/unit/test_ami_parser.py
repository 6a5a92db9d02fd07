"""The pure AMI parser: banner, framing, repeats, straddling reads, malformed blocks."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ami.parser import AMIBanner, AMIMessage, AMIParseError, AMIParser

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "asterisk"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
EVENT = b"Event: Hangup\r\nChannel: Local/1@x-1;1\r\nCause: 16\r\n\r\n"


def test_given_banner_without_blank_line_when_fed_then_banner_then_message() -> None:
    items = AMIParser().feed(BANNER + b"Response: Success\r\nMessage: ok\r\n\r\n")
    assert items[0] == AMIBanner("Asterisk Call Manager/11.0.0")
    assert isinstance(items[0], AMIBanner) and items[0].version == "11.0.0"
    assert items[1] == {"Response": "Success", "Message": "ok"}
    assert isinstance(items[1], AMIMessage) and items[1].is_response


def test_given_value_with_colon_space_when_parsed_then_kept_whole() -> None:
    [msg] = AMIParser(expect_banner=False).feed(b"Event: X\r\nData: a: b: c\r\nEmpty: \r\n\r\n")
    assert isinstance(msg, AMIMessage)
    assert msg["Data"] == "a: b: c"
    assert msg["Empty"] == ""


def test_given_repeated_keys_when_parsed_then_first_by_index_and_all_by_getall() -> None:
    raw = b"Response: Success\r\nOutput: one\r\nOutput: two\r\nOutput: three\r\n\r\n"
    [msg] = AMIParser(expect_banner=False).feed(raw)
    assert isinstance(msg, AMIMessage)
    assert msg["Output"] == "one"
    assert msg.getall("Output") == ["one", "two", "three"]
    assert msg.getall("Response") == ["Success"]
    assert msg.getall("Missing") == []


def test_given_event_with_response_key_when_parsed_then_it_is_an_event() -> None:
    [msg] = AMIParser(expect_banner=False).feed(
        b"Event: OriginateResponse\r\nResponse: Success\r\n\r\n"
    )
    assert isinstance(msg, AMIMessage)
    assert msg.is_event and not msg.is_response and msg.name == "OriginateResponse"


def test_given_line_without_separator_when_parsed_then_error_names_line_and_parser_resyncs() -> (
    None
):
    parser = AMIParser()
    items = parser.feed(BANNER + b"Event: A\r\nbroken line\r\n\r\n" + EVENT)
    assert items[1] == AMIParseError(3, "broken line", "line without ': '")
    assert isinstance(items[2], AMIMessage) and items[2]["Cause"] == "16"


def test_given_block_not_starting_with_event_or_response_when_parsed_then_error() -> None:
    items = AMIParser(expect_banner=False).feed(EVENT + b"Foo: bar\r\n\r\n" + EVENT)
    error = items[1]
    assert isinstance(error, AMIParseError)
    assert error.line_number == 5 and error.line == "Foo: bar"
    assert "neither Event nor Response" in error.describe()
    assert isinstance(items[2], AMIMessage)


def test_given_bad_banner_when_fed_then_error_item() -> None:
    [item] = AMIParser().feed(b"SSH-2.0-OpenSSH\r\n")
    assert isinstance(item, AMIParseError) and item.line_number == 1


def test_given_truncated_frame_when_fed_then_leftover_kept_until_completed() -> None:
    parser = AMIParser(expect_banner=False)
    assert parser.feed(EVENT[:20]) == []
    assert parser.leftover == EVENT[:20]
    [msg] = parser.feed(EVENT[20:])
    assert isinstance(msg, AMIMessage) and parser.leftover == b""


def _parse_all(data: bytes, sizes: list[int]) -> tuple[list[object], bytes]:
    parser = AMIParser()
    out: list[object] = []
    pos = 0
    for size in sizes:
        out.extend(parser.feed(data[pos : pos + size]))
        pos += size
    out.extend(parser.feed(data[pos:]))
    return out, parser.leftover


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), max_size=200))
def test_given_any_read_split_when_fed_then_same_items(sizes: list[int]) -> None:
    data = (FIXTURES / "answered_local_call.ami").read_bytes()
    whole, _ = _parse_all(data, [])
    split, leftover = _parse_all(data, sizes)
    assert split == whole and leftover == b""


def test_given_every_fixture_in_one_byte_reads_when_fed_then_same_as_whole() -> None:
    for path in sorted(FIXTURES.glob("*.ami")):
        data = path.read_bytes()
        whole, _ = _parse_all(data, [])
        bytewise, leftover = _parse_all(data, [1] * len(data))
        assert bytewise == whole, path.name
        assert leftover == b""
        assert not [item for item in whole if isinstance(item, AMIParseError)], path.name
