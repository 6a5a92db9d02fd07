"""Pure AMI stream parser: bytes in, messages and leftover bytes out, no I/O.

The stream starts with one banner line (``Asterisk Call Manager/11.0.0\\r\\n``, no blank
line after it); then every message is a block of ``Key: Value`` lines ended by a blank
line (``\\r\\n\\r\\n``). Values may contain ``": "``; keys may repeat (``Output:`` lines of a
``Command`` response, ``ChanVariable``): ``msg["Key"]`` is the first value, and
``msg.getall("Key")`` every value in stream order.

A malformed block (a line without ``": "``, a block that starts with neither ``Event`` nor
``Response``) becomes an :class:`AMIParseError` item naming the offending line; parsing
goes on at the next message boundary. Bytes after the last boundary stay in
:attr:`AMIParser.leftover` until more data arrives (or the stream ends truncated).
"""

from __future__ import annotations

from dataclasses import dataclass

BANNER_PREFIX = "Asterisk Call Manager/"
_SEP = "\r\n\r\n"
_BSEP = b"\r\n\r\n"
_FIRST_KEYS = frozenset(("Event", "Response"))


class AMIMessage(dict[str, str]):
    """One AMI message: ``msg["Key"]`` is the first value, ``getall`` every repeat."""

    _repeats: dict[str, list[str]] | None = None

    @property
    def name(self) -> str:
        """The event name (``Event:``), or ``""`` for a response."""
        return self.get("Event", "")

    @property
    def is_event(self) -> bool:
        """True for an ``Event:`` message."""
        return "Event" in self

    @property
    def is_response(self) -> bool:
        """True for a ``Response:`` message (not an event that carries ``Response``)."""
        return "Event" not in self

    def getall(self, key: str) -> list[str]:
        """Every value of ``key`` in stream order (empty list when absent)."""
        repeats = self._repeats
        if repeats is not None and key in repeats:
            return list(repeats[key])
        value = self.get(key)
        return [] if value is None else [value]

    def add(self, key: str, value: str) -> None:
        """Append a value: the first one stays ``msg[key]``, repeats go to ``getall``."""
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


@dataclass(frozen=True, slots=True)
class AMIBanner:
    """The banner line sent on connect (the AMI protocol version, not Asterisk's)."""

    text: str

    @property
    def version(self) -> str:
        """The protocol version (``11.0.0``)."""
        return self.text.removeprefix(BANNER_PREFIX)


@dataclass(frozen=True, slots=True)
class AMIParseError:
    """A malformed block: which stream line, its text and why; the parser resynced."""

    line_number: int  # 1-based line number in the stream (the banner is line 1)
    line: str
    reason: str

    def describe(self) -> str:
        """A human-readable summary naming the culprit line."""
        return f"line {self.line_number}: {self.reason}: {self.line!r}"


ParsedItem = AMIMessage | AMIBanner | AMIParseError


class AMIParser:
    """Incremental AMI parser; feed it bytes as they arrive, in order."""

    __slots__ = ("_banner_pending", "_buffer", "_line")

    def __init__(self, *, expect_banner: bool = True, first_line: int = 1) -> None:
        self._buffer = b""
        self._banner_pending = expect_banner
        self._line = first_line  # stream line number of the first line in the buffer

    @property
    def leftover(self) -> bytes:
        """Bytes received after the last complete message (a partial frame)."""
        return self._buffer

    def feed(self, data: bytes) -> list[ParsedItem]:
        """Add ``data`` and return every item completed by it, in stream order."""
        buffer = self._buffer + data if self._buffer else data
        items: list[ParsedItem] = []
        if self._banner_pending:
            end = buffer.find(b"\r\n")
            if end < 0:
                self._buffer = buffer
                return items
            items.append(self._banner(buffer[:end].decode("utf-8", "replace")))
            buffer = buffer[end + 2 :]
            self._banner_pending = False
            self._line += 1
        cut = buffer.rfind(_BSEP)
        if cut < 0:
            self._buffer = buffer
            return items
        self._buffer = buffer[cut + 4 :]
        text = buffer[:cut].decode("utf-8", "replace")
        blocks = text.split(_SEP)
        append = items.append
        for index, block in enumerate(blocks):
            if not block:
                continue
            lines = block.split("\r\n")
            try:
                msg = AMIMessage([line.split(": ", 1) for line in lines])
            except ValueError:
                append(self._slow_block(lines, blocks, index))
                continue
            if len(msg) != len(lines) or next(iter(msg)) not in _FIRST_KEYS:
                append(self._slow_block(lines, blocks, index))
                continue
            append(msg)
        self._line += text.count("\r\n") + 2
        return items

    def _banner(self, line: str) -> AMIBanner | AMIParseError:
        if line.startswith(BANNER_PREFIX):
            return AMIBanner(line)
        return AMIParseError(self._line, line, "not an AMI banner")

    def _slow_block(self, lines: list[str], blocks: list[str], index: int) -> ParsedItem:
        """Parse a block with repeated keys, or name the line that makes it malformed."""
        msg = AMIMessage()
        for offset, line in enumerate(lines):
            key, sep, value = line.partition(": ")
            if not sep:
                if line.endswith(":") and line.find(":") == len(line) - 1:
                    key, value = line[:-1], ""
                else:
                    return AMIParseError(
                        self._line_of(blocks, index) + offset, line, "line without ': '"
                    )
            if not msg and key not in _FIRST_KEYS:
                return AMIParseError(
                    self._line_of(blocks, index) + offset,
                    line,
                    "message starts with neither Event nor Response",
                )
            msg.add(key, value)
        return msg

    def _line_of(self, blocks: list[str], index: int) -> int:
        """Stream line number of the first line of ``blocks[index]`` (error path only)."""
        return self._line + sum(block.count("\r\n") + 2 for block in blocks[:index])
