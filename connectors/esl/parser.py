"""Pure FreeSWITCH Event Socket parser: bytes in, frames and leftover bytes out, no I/O.

The wire (``libs/esl/src/esl.c``, ``mod_event_socket.c``): every frame is a header block
of ``Key: Value`` lines ended by an empty line (LF only, never CRLF); when the block has
``Content-Length: N``, N body bytes follow. Content types: ``auth/request``,
``command/reply`` (result in ``Reply-Text``), ``api/response`` (body),
``text/event-plain`` / ``text/event-json`` (body = one event), ``text/disconnect-notice``.
Outer header values are kept as sent (they are not URL-encoded).

:class:`ESLParser` only frames the stream; :func:`decode_event` turns an event frame into
an :class:`ESLEvent`:

* ``text/event-plain``: the body is a second header block whose values are URL-encoded
  (names are not); each value is decoded exactly once with ``urllib.parse.unquote``
  (FreeSWITCH never re-escapes an existing ``%XX``, so a second decode would be wrong).
  The block ends with an empty line; BACKGROUND_JOB (and a few others) carry their own
  ``Content-Length`` and an inner body, which becomes :attr:`ESLEvent.body`.
* ``text/event-json``: one JSON object, every value a string, with duplicate keys
  (``Hangup-Cause`` twice); ``_body`` becomes :attr:`ESLEvent.body`.

Header names repeat (``Hangup-Cause``, ``Channel-Write-Codec-Name``): ``h["Key"]`` is the
first value, ``h.getall("Key")`` every value in order.

Malformed input never raises from :meth:`ESLParser.feed`: a header line without ``": "``,
a non-numeric or negative ``Content-Length`` or a header block without ``Content-Type``
becomes an :class:`ESLParseError` item naming the culprit, and parsing resyncs at the
next blank line. :func:`decode_event` raises :class:`ESLDecodeError` (a ``ValueError``)
for a malformed event body.
"""

from __future__ import annotations

import json
from binascii import a2b_qp
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

_EXCERPT = 200
_BLANK = b"\n\n"
_LF = 10
_MARK = "\x01"  # put before each newline's ": " by the fast header split (_split_fast)
_MARK_SEP = "\x01: "
# Commands whose text is several lines by design: a command line, then header lines.
_MULTILINE_COMMANDS = ("sendmsg", "sendevent")


class ESLDecodeError(ValueError):
    """An event body that cannot be decoded; the message names the culprit."""


class ESLHeaders(dict[str, str]):
    """Header block: ``h["Key"]`` is the FIRST value; ``h.getall("Key")`` every value."""

    _repeats: dict[str, list[str]] | None = None

    def getall(self, key: str) -> list[str]:
        """Every value of ``key`` in stream order (empty list when absent)."""
        repeats = self._repeats
        if repeats is not None and key in repeats:
            return list(repeats[key])
        value = self.get(key)
        return [] if value is None else [value]

    def add(self, key: str, value: str) -> None:
        """Append a value: the first one stays ``h[key]``, repeats go to ``getall``."""
        if key not in self:
            self[key] = value
            return
        if self._repeats is None:
            self._repeats = {}
        bucket = self._repeats.get(key)
        if bucket is None:
            self._repeats[key] = [self[key], value]
        else:
            bucket.append(value)


@dataclass(slots=True)
class ESLFrame:
    """One outer frame: its header block and its Content-Length body (b"" when none)."""

    headers: ESLHeaders
    body: bytes

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header (``""`` when absent)."""
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        """The ``Reply-Text`` header of a ``command/reply`` (``""`` when absent)."""
        return self.headers.get("Reply-Text", "")


@dataclass(frozen=True, slots=True)
class ESLParseError:
    """A malformed frame: where it started, the offending text and why; parsing resynced."""

    offset: int  # byte offset in the stream where the bad frame started
    text: str  # the offending header line / excerpt (<= 200 chars)
    reason: str

    def describe(self) -> str:
        """A human-readable summary naming the culprit."""
        return f"offset {self.offset}: {self.reason}: {self.text!r}"


ParsedItem = ESLFrame | ESLParseError


class ESLEvent(ESLHeaders):
    """A decoded event (from text/event-plain or text/event-json).

    Header values are URL-decoded (plain) or as sent (json), duplicate names are kept via
    ``getall()``, and ``body`` is the inner body (BACKGROUND_JOB's ``+OK <uuid>\\n``, or
    JSON ``_body``), ``""`` when none.
    """

    body: str = ""

    @property
    def name(self) -> str:
        """``Event-Name`` (``CUSTOM`` for custom events)."""
        return self.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        """``Event-Subclass`` (``callcenter::info``), ``""`` when none."""
        return self.get("Event-Subclass", "")

    @property
    def unique_id(self) -> str:
        """``Unique-ID`` of the channel the event is about, ``""`` when none."""
        return self.get("Unique-ID", "")


def _excerpt(text: str) -> str:
    return text[:_EXCERPT]


def _content_length(value: str) -> int | str:
    """The length, or the reason it is not one."""
    if value.isascii() and value.isdigit():
        return int(value)
    stripped = value.strip()
    if stripped.startswith("-") and stripped[1:].isascii() and stripped[1:].isdigit():
        return "negative Content-Length"
    return "non-numeric Content-Length"


class ESLParser:
    """Incremental ESL framer: feed bytes in order, get complete frames (and parse errors).

    Works in whole blocks (``find`` of the blank line, one slice per body), never per
    byte; a body that is not complete yet is waited for without rescanning, so 1-byte
    reads cost O(1) each.
    """

    __slots__ = ("_buffer", "_need", "_offset", "_scan")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0  # stream offset of _buffer[0]
        self._need = 0  # nothing can complete before the buffer holds this many bytes
        self._scan = 0  # no blank line starts before this buffer index

    @property
    def leftover(self) -> bytes:
        """Bytes of an incomplete frame (received after the last complete one)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[ParsedItem]:
        """Add ``data`` and return every item completed by it, in stream order."""
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        if size < self._need:
            return []
        items: list[ParsedItem] = []
        pos = 0
        scan = self._scan
        need = 0
        while True:
            while pos < size and buffer[pos] == _LF:  # stray blank lines between frames
                pos += 1
            end = buffer.find(_BLANK, scan if scan > pos else pos)
            if end < 0:
                scan = size - 1 if size - 1 > pos else pos
                break
            parsed = _frame_head(buffer[pos:end].decode("utf-8", "replace"), self._offset + pos)
            if isinstance(parsed, ESLParseError):
                items.append(parsed)
                pos = scan = end + 2
                continue
            headers, length = parsed
            body_end = end + 2 + length
            if body_end > size:
                need = body_end  # wait for the body; the header block is parsed again then
                scan = pos
                break
            items.append(ESLFrame(headers, bytes(buffer[end + 2 : body_end]) if length else b""))
            pos = scan = body_end
        if pos:
            del buffer[:pos]
            self._offset += pos
        self._scan = scan - pos
        self._need = need - pos if need else 0
        return items


def _frame_head(block: str, offset: int) -> tuple[ESLHeaders, int] | ESLParseError:
    """An outer header block's headers and body length, or the error naming the culprit."""
    lines = block.split("\n")
    try:
        headers = ESLHeaders([line.split(": ", 1) for line in lines])
    except ValueError:
        headers = ESLHeaders()
    if len(headers) != len(lines):  # a line without ": ", or a repeated name
        headers = ESLHeaders()
        for line in lines:
            key, sep, value = line.partition(": ")
            if not sep:
                return ESLParseError(offset, _excerpt(line), "header line without ': '")
            headers.add(key, value)
    if "Content-Type" not in headers:
        return ESLParseError(offset, _excerpt(block), "header block without Content-Type")
    text = headers.get("Content-Length")
    if text is None:
        return headers, 0
    length = _content_length(text)
    if isinstance(length, str):
        return ESLParseError(offset, _excerpt("Content-Length: " + text), length)
    return headers, length


def decode_event(frame: ESLFrame) -> ESLEvent:
    """Decode a text/event-plain or text/event-json frame.

    Raises :class:`ESLDecodeError` (message names the culprit) when it is malformed or
    not an event frame.
    """
    content_type = frame.content_type
    if content_type == "text/event-plain":
        return _decode_plain(frame.body)
    if content_type == "text/event-json":
        return _decode_json(frame.body)
    raise ESLDecodeError(f"not an event frame: Content-Type {content_type!r}")


def _decode_plain(body: bytes) -> ESLEvent:
    if body.endswith(_BLANK):  # the usual case: one header block, no inner body
        split = _split_fast(body[:-2].decode("utf-8", "replace"))
        if split is not None:
            event = _event(*split)
            if "Content-Length" not in event:
                return event
    cut = body.find(_BLANK)
    if cut < 0:  # tolerate a body that lost its final blank line
        head, rest = body.rstrip(b"\n"), b""
    else:
        head, rest = body[:cut], body[cut + 2 :]
    if not head:
        raise ESLDecodeError("empty event body")
    text = head.decode("utf-8", "replace")
    split = _split_fast(text)
    event = _plain_slow(text.split("\n")) if split is None else _event(*split)
    if "Content-Length" in event:
        length = _content_length(event["Content-Length"])
        if isinstance(length, str):
            raise ESLDecodeError(f"{length} in event: {event['Content-Length']!r}")
        if len(rest) != length:
            raise ESLDecodeError(
                f"inner body is {len(rest)} bytes, Content-Length says {length}: "
                f"{rest[:_EXCERPT]!r}"
            )
        event.body = rest.decode("utf-8", "replace")
    elif rest.strip(b"\n"):
        raise ESLDecodeError(f"bytes after the event headers: {rest[:_EXCERPT]!r}")
    return event


def _event(keys: list[str], values: list[str]) -> ESLEvent:
    event = ESLEvent(zip(keys, values, strict=True))  # each name at its first place
    if len(event) == len(keys):
        return event
    # Repeated names (Hangup-Cause, Channel-Write-Codec-*): dict() kept the LAST value.
    first = dict(zip(reversed(keys), reversed(values), strict=True))
    repeats: dict[str, list[str]] = {}
    for key, count in Counter(keys).items():
        if count == 2:
            repeats[key] = [first[key], event[key]]
        elif count > 2:
            repeats[key] = [v for k, v in zip(keys, values, strict=True) if k == key]
    for key in repeats:
        event[key] = first[key]
    event._repeats = repeats
    return event


def _split_fast(text: str) -> tuple[list[str], list[str]] | None:
    """Names and URL-decoded values of a well-formed header block, or None.

    Raw values never hold ``": "``, a newline or a control character (the switch
    escapes them), so one ``split`` cuts the block into name/value tokens once each
    newline has become a marker plus ``": "``. The marker then ends the last token of
    every line but the final one; when all of them sit in values (odd tokens), every
    line has exactly one ``": "`` (else None: the slow path names the culprit). The
    values, still marker-separated, are URL-decoded in one go (:func:`_unquote_joined`).
    """
    if _MARK in text:
        return None
    lines = text.count("\n") + 1
    tokens = text.replace("\n", _MARK_SEP).split(": ")
    if len(tokens) != 2 * lines:
        return None
    joined = "".join(tokens[1::2])
    if joined.count(_MARK) != lines - 1:  # a marker sits in a name: a line is malformed
        return None
    values = _unquote_joined(joined, lines) if "%" in joined else joined.split(_MARK)
    return tokens[0::2], values


def _unquote_joined(joined: str, count: int) -> list[str]:
    """The ``count`` marker-separated values of ``joined``, each ``unquote``-d.

    The common case is one C call: ``%XX`` becomes ``=XX`` for ``binascii.a2b_qp``
    when nothing else in the text means something to it (``=``, CR, LF, non-ASCII), and
    the output length proves that every ``%`` was a valid escape (``unquote`` keeps
    invalid ones as they are); the value count proves no escape decoded to the marker.
    """
    if "=" not in joined and "\r" not in joined and joined.isascii():
        raw = a2b_qp(joined.replace("%", "="))
        if len(raw) == len(joined) - 2 * joined.count("%"):
            values = raw.decode("utf-8", "replace").split(_MARK)
            if len(values) == count:
                return values
    return [unquote(value) if "%" in value else value for value in joined.split(_MARK)]


def _plain_slow(lines: list[str]) -> ESLEvent:
    """Build an event with repeated names, or name the line that makes it malformed."""
    event = ESLEvent()
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            if not (line.endswith(":") and line.find(":") == len(line) - 1):
                raise ESLDecodeError(f"event header line without ': ': {_excerpt(line)!r}")
            key, value = line[:-1], ""
        event.add(key, unquote(value) if "%" in value else value)
    return event


class _JSONPairs(list[tuple[str, Any]]):
    """One JSON object as its (key, value) pairs, duplicates kept."""


def _json_text(value: Any) -> str:
    """A JSON value as header text (FreeSWITCH sends strings; others keep their JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(_unpair(value), separators=(",", ":"))


def _unpair(value: Any) -> Any:
    if isinstance(value, _JSONPairs):
        return {key: _unpair(item) for key, item in value}
    if isinstance(value, list):
        return [_unpair(item) for item in value]
    return value


def _decode_json(body: bytes) -> ESLEvent:
    try:
        pairs = json.loads(body, object_pairs_hook=_JSONPairs)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ESLDecodeError(f"bad JSON event body: {exc}: {body[:_EXCERPT]!r}") from exc
    if not isinstance(pairs, _JSONPairs):
        raise ESLDecodeError(f"JSON event body is not an object: {body[:_EXCERPT]!r}")
    event = ESLEvent(pairs)
    if len(event) != len(pairs) or not all(type(value) is str for value in event.values()):
        event = ESLEvent()
        for key, value in pairs:
            event.add(key, _json_text(value))
    if "_body" in event:
        event.body = event.pop("_body")
    return event


def encode_command(command: str) -> bytes:
    """One command as sent on the wire: its text + ``b"\\n\\n"``.

    ``sendmsg``/``sendevent`` are multi-line by design (command line, then header lines);
    every other command must be one line, else ``ValueError`` (a newline would end the
    frame early and inject a second command). No command may contain an empty line.
    """
    if not command.strip():
        raise ValueError("empty ESL command")
    text = command.rstrip("\n") if command.startswith(_MULTILINE_COMMANDS) else command
    if "\r" in text:
        raise ValueError(f"ESL command contains a carriage return: {text[:_EXCERPT]!r}")
    if command.startswith(_MULTILINE_COMMANDS):
        if "\n\n" in text:
            raise ValueError(f"ESL command contains an empty line: {text[:_EXCERPT]!r}")
    elif "\n" in text:
        raise ValueError(f"single-line ESL command contains a newline: {text[:_EXCERPT]!r}")
    return text.encode("utf-8") + _BLANK
