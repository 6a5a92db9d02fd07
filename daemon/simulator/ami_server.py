"""The simulator's AMI server: the server side of the Asterisk Manager Interface.

Speaks AMI like Asterisk 22 on a TCP socket: the ``Asterisk Call Manager/11.0.0`` banner,
``Key: Value`` lines ending ``\\r\\n``, a blank line after every message. Handles
``Login``, ``Ping``, ``Hangup``, ``CoreShowChannels`` and ``Logoff``; every other action
gets ``Response: Error`` / ``Message: Invalid/unknown command``. Replies carry the
action's ``ActionID``. Events are broadcast to every logged-in session with events on,
each with ``Privilege`` and ``Timestamp`` (epoch seconds, 6 decimals).

Protocol problems of a client (an over-long line, a refused login) close that client's
connection, like Asterisk; nothing is raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
Fields = list[tuple[str, str]]

_log = structlog.get_logger(__name__)
_MAX_WRITE_BUFFER = 64 * 1024 * 1024  # a session this far behind is disconnected
_STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}
_CAUSE_TEXT = {
    0: "Unknown",
    16: "Normal Clearing",
    17: "User busy",
    21: "Call Rejected",
    34: "Circuit/channel congestion",
}
_CID_PRES = ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")


class ChannelRegistry(Protocol):
    """What the AMI server needs from the call model."""

    def live_channels(self) -> list[Fields]:
        """``CoreShowChannel`` fields of every live channel (no Event/ActionID)."""
        ...

    def request_hangup(self, channel: str, cause: int) -> bool:
        """Ask the channel's call to hang up; False when there is no such channel."""
        ...


def encode_message(fields: Fields) -> bytes:
    """One AMI message: ``Key: Value\\r\\n`` lines and the terminating blank line."""
    return ("".join(f"{key}: {value}\r\n" for key, value in fields) + "\r\n").encode()


class _Session:
    """One AMI client connection."""

    __slots__ = ("authenticated", "events", "peer", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.authenticated = False
        self.events = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}/{peer[1]}" if isinstance(peer, tuple) else str(peer)


class AmiServer:
    """An AMI server on ``host:port`` (port 0: any free port) that broadcasts call events."""

    def __init__(
        self,
        *,
        username: str,
        secret: str,
        registry: ChannelRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._username = username
        self._secret = secret
        self._registry = registry
        self._host = host
        self._port = port
        self.clock = clock
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # asyncio.start_server's tasks
        self._started_at = clock()

    @property
    def port(self) -> int:
        """The TCP port actually bound (after ``start``)."""
        if self._server is None:
            raise RuntimeError("AMI server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen for AMI clients."""
        self._started_at = self.clock()
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            session.writer.close()
        self._sessions.clear()
        if self._handlers:  # closed transports give each handler EOF: let them finish
            await asyncio.wait(list(self._handlers), timeout=5)
        await self._server.wait_closed()
        self._server = None

    async def restart(self) -> None:
        """Drop every client and listen again on the same port (a switch restart seen
        from AMI: calls in progress keep running, their events meanwhile are lost)."""
        port = self.port
        await self.stop()
        self._port = port
        await self.start()

    def timestamp(self) -> str:
        """The current time as AMI writes it: epoch seconds with 6 decimals."""
        return f"{self.clock():.6f}"

    def broadcast(self, event: str, privilege: str, fields: Fields) -> str:
        """Send one event to every session with events on; returns its Timestamp."""
        stamp = self.timestamp()
        data = encode_message(
            [("Event", event), ("Privilege", privilege), ("Timestamp", stamp), *fields]
        )
        for session in list(self._sessions):
            if not session.events:
                continue
            transport = session.writer.transport
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
                _log.warning("ami client too slow, disconnecting", peer=session.peer)
                session.writer.close()
                self._sessions.discard(session)
                continue
            session.writer.write(data)
        return stamp

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self._sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        writer.write(BANNER)
        try:
            while True:
                message = await _read_message(reader)
                if message is None or not self._handle(session, message):
                    break
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            _log.debug("ami client dropped", peer=session.peer, error=str(exc))
        finally:
            self._sessions.discard(session)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, session: _Session, message: dict[str, str]) -> bool:
        """Answer one action; False closes the connection."""
        action = message.get("action", "").lower()
        reply: Fields = [("ActionID", message["actionid"])] if "actionid" in message else []
        write = session.writer.write
        if not action:
            write(
                encode_message([("Response", "Error"), *reply, _msg("Missing action in request")])
            )
            return True
        if action == "login":
            return self._login(session, message, reply)
        if action == "logoff":
            write(
                encode_message([("Response", "Goodbye"), *reply, _msg("Thanks for all the fish.")])
            )
            return False
        if not session.authenticated:
            write(encode_message([("Response", "Error"), *reply, _msg("Permission denied")]))
            return True
        if action == "ping":
            pong = [("Response", "Success"), *reply, ("Ping", "Pong")]
            write(encode_message([*pong, ("Timestamp", self.timestamp())]))
        elif action == "hangup":
            write(encode_message(self._hangup(message, reply)))
        elif action == "coreshowchannels":
            self._core_show_channels(session, reply)
        else:
            write(encode_message([("Response", "Error"), *reply, _msg("Invalid/unknown command")]))
        return True

    def _login(self, session: _Session, message: dict[str, str], reply: Fields) -> bool:
        good_user = hmac.compare_digest(message.get("username", ""), self._username)
        good_secret = hmac.compare_digest(message.get("secret", ""), self._secret)
        if not (good_user and good_secret):
            _log.info("ami login refused", peer=session.peer, username=message.get("username"))
            fail = [("Response", "Error"), *reply, _msg("Authentication failed")]
            session.writer.write(encode_message(fail))
            return False
        session.authenticated = True
        session.events = message.get("events", "on").strip().lower() != "off"
        ok = [("Response", "Success"), *reply, _msg("Authentication accepted")]
        session.writer.write(encode_message(ok))
        if session.events:
            uptime = str(int(self.clock() - self._started_at))
            booted = [("Event", "FullyBooted"), ("Privilege", "system,all")]
            booted += [("Uptime", uptime), ("LastReload", uptime), ("Status", "Fully Booted")]
            session.writer.write(encode_message(booted))
        self._successful_auth(session)
        return True

    def _successful_auth(self, session: _Session) -> None:
        now = self.clock()
        tv = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1000):03d}+0000"
        )
        local = f"IPV4/TCP/{self._host}/{self.port}"
        self.broadcast(
            "SuccessfulAuth",
            "security,all",
            [
                ("EventTV", tv),
                ("Severity", "Informational"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("AccountID", self._username),
                ("SessionID", f"0x{id(session):x}"),
                ("LocalAddress", local),
                ("RemoteAddress", f"IPV4/TCP/{session.peer}"),
                ("UsingPassword", "0"),
                ("SessionTV", tv),
            ],
        )

    def _hangup(self, message: dict[str, str], reply: Fields) -> Fields:
        channel = message.get("channel", "").strip()
        if not channel:
            return [("Response", "Error"), *reply, _msg("No channel specified")]
        cause_text = message.get("cause", "16").strip() or "16"
        if not cause_text.isdigit():
            return [("Response", "Error"), *reply, _msg(f"Invalid cause: {cause_text}")]
        if not self._registry.request_hangup(channel, int(cause_text)):
            return [("Response", "Error"), *reply, _msg("No such channel")]
        return [("Response", "Success"), *reply, _msg("Channel Hungup")]

    def _core_show_channels(self, session: _Session, reply: Fields) -> None:
        write = session.writer.write
        start = [("Response", "Success"), *reply, ("EventList", "start")]
        write(encode_message([*start, _msg("Channels will follow")]))
        items = self._registry.live_channels()
        for item in items:
            write(encode_message([("Event", "CoreShowChannel"), *reply, *item]))
        done = [("Event", "CoreShowChannelsComplete"), *reply, ("EventList", "Complete")]
        write(encode_message([*done, ("ListItems", str(len(items)))]))


def _msg(text: str) -> tuple[str, str]:
    return ("Message", text)


async def _read_message(reader: asyncio.StreamReader) -> dict[str, str] | None:
    """Read one action (lines up to a blank line); keys lower-cased; None at EOF."""
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if not raw:
            return None
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if headers:
                return headers
            continue
        key, sep, value = line.partition(":")
        if sep:
            headers.setdefault(key.strip().lower(), value.strip())


@dataclass(eq=False, slots=True)
class AmiChannel:
    """A channel as AMI shows it: the header block every channel event repeats."""

    name: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    created: float
    state: int = 0
    priority: int = 1
    caller_num: str = "<unknown>"
    caller_name: str = "<unknown>"
    connected_num: str = "<unknown>"
    connected_name: str = "<unknown>"
    accountcode: str = ""
    application: str = ""
    app_data: str = ""
    bridge_id: str = ""

    def fields(self, prefix: str = "") -> Fields:
        """The channel block, each key prefixed (``Dest``, ``LocalOne``, ...)."""
        return [
            (prefix + "Channel", self.name),
            (prefix + "ChannelState", str(self.state)),
            (prefix + "ChannelStateDesc", _STATE_DESC[self.state]),
            (prefix + "CallerIDNum", self.caller_num),
            (prefix + "CallerIDName", self.caller_name),
            (prefix + "ConnectedLineNum", self.connected_num),
            (prefix + "ConnectedLineName", self.connected_name),
            (prefix + "Language", "en"),
            (prefix + "AccountCode", self.accountcode),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", str(self.priority)),
            (prefix + "Uniqueid", self.uniqueid),
            (prefix + "Linkedid", self.linkedid),
        ]

    def show_fields(self, now: float) -> Fields:
        """The ``CoreShowChannel`` list item of this channel (without ActionID)."""
        secs = max(int(now - self.created), 0)
        duration = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        extra = [("Application", self.application), ("ApplicationData", self.app_data)]
        return [*self.fields(), *extra, ("Duration", duration), ("BridgeId", self.bridge_id)]


class ChannelEvents:
    """Emits Asterisk's channel, dial, bridge and Cdr events for one call's channels."""

    def __init__(self, server: AmiServer, *, caller: str, callee: str, account: str) -> None:
        self.server = server
        self.caller, self.callee, self.account = caller, callee, account
        self.answer_time: float | None = None  # epoch of the answer, for the Cdrs

    def ev(
        self, name: str, ch: AmiChannel | None, extra: Fields | None = None, priv: str = "call,all"
    ) -> str:
        """Broadcast one event with the channel block (if any) and extra fields."""
        fields = [*(ch.fields() if ch else []), *(extra or [])]
        return self.server.broadcast(name, priv, fields)

    def exten(self, ch: AmiChannel, app: str, data: str, priority: int | None = None) -> None:
        ch.priority = ch.priority if priority is None else priority
        ch.application, ch.app_data = app, data
        extra = [("Extension", ch.exten), ("Application", app), ("AppData", data)]
        self.ev("Newexten", ch, extra, "dialplan,all")

    def varset(self, ch: AmiChannel, variable: str, value: str) -> None:
        self.ev("VarSet", ch, [("Variable", variable), ("Value", value)], "dialplan,all")

    def newstate(self, ch: AmiChannel, state: int) -> None:
        ch.state = state
        self.ev("Newstate", ch)

    def hangup(self, ch: AmiChannel, cause: int) -> str:
        return self.ev("Hangup", ch, [("Cause", str(cause)), ("Cause-txt", _CAUSE_TEXT[cause])])

    def hangup_request(self, ch: AmiChannel, cause: int, soft: bool = False) -> None:
        self.ev("SoftHangupRequest" if soft else "HangupRequest", ch, [("Cause", str(cause))])

    def dial(self, name: str, caller: AmiChannel | None, dest: AmiChannel, extra: Fields) -> str:
        fields = [*(caller.fields() if caller else []), *dest.fields("Dest"), *extra]
        return self.server.broadcast(name, "call,all", fields)

    def bridge(self, name: str, bridge_id: str, count: int, ch: AmiChannel | None = None) -> None:
        fields: Fields = [("BridgeUniqueid", bridge_id), ("BridgeType", "basic")]
        fields += [("BridgeTechnology", "simple_bridge"), ("BridgeCreator", "<unknown>")]
        fields += [("BridgeName", "<unknown>"), ("BridgeNumChannels", str(count))]
        fields += [("BridgeVideoSourceMode", "none"), *(ch.fields() if ch else [])]
        self.server.broadcast(name, "call,all", fields)

    def cdr(self, ch: AmiChannel, dest: str, app: str, data: str, disposition: str) -> None:
        end = self.server.clock()
        answered = disposition == "ANSWERED" and self.answer_time is not None
        answer = self.answer_time if answered and self.answer_time is not None else None
        fmt = "%Y-%m-%d %H:%M:%S"
        fields: Fields = [
            ("AccountCode", ch.accountcode),
            ("Source", self.caller),
            ("Destination", self.callee),
            ("DestinationContext", ch.context),
            ("CallerID", f'"" <{self.caller}>'),
            ("Channel", ch.name),
            ("DestinationChannel", dest),
            ("LastApplication", app),
            ("LastData", data),
            ("StartTime", time.strftime(fmt, time.localtime(ch.created))),
            ("AnswerTime", time.strftime(fmt, time.localtime(answer)) if answer else ""),
            ("EndTime", time.strftime(fmt, time.localtime(end))),
            ("Duration", str(int(end - ch.created))),
            ("BillableSeconds", str(int(end - answer)) if answer else "0"),
            ("Disposition", disposition),
            ("AMAFlags", "DOCUMENTATION"),
            ("UniqueID", ch.uniqueid),
            ("UserField", ""),
        ]
        self.server.broadcast("Cdr", "cdr,all", fields)

    def identify(self, ch: AmiChannel, num: str, connected: str, first: str) -> None:
        """NewCallerid / NewAccountCode / NewConnectedLine in the trace's order."""
        ch.caller_num, ch.caller_name = num, "<unknown>"
        for step in ("acct", "cid", "line") if first == "acct" else ("cid", "acct", "line"):
            if step == "acct":
                old, ch.accountcode = ch.accountcode, self.account
                self.ev("NewAccountCode", ch, [("OldAccountCode", old)])
            elif step == "cid":
                self.ev("NewCallerid", ch, [_CID_PRES])
            else:
                ch.connected_num, ch.connected_name = connected, "<unknown>"
                self.ev("NewConnectedLine", ch)

    def local_bridge_fields(self, one: AmiChannel, two: AmiChannel) -> Fields:
        extra = [("Context", one.context), ("Exten", one.exten), ("LocalOptimization", "Yes")]
        return [*one.fields("LocalOne"), *two.fields("LocalTwo"), *extra]
