"""The simulator's event socket: the server side of FreeSWITCH's mod_event_socket (inbound ESL).

Speaks ESL like the FreeSWITCH 1.10.12 traces in ``fixtures/freeswitch`` on a TCP socket
(LF line ends, a blank line after every header block, ``Content-Length`` bodies):

* on connect ``Content-Type: auth/request``; ``auth <password>`` gets ``+OK accepted``, or
  ``-ERR invalid``, the goodbye ``text/disconnect-notice`` and EOF; before that every
  other command gets ``-ERR command not found``;
* ``event plain|json <names...>`` (``ALL``; the words after ``CUSTOM`` are subclasses;
  any upper-case word is taken as an event name), ``nixevent``, ``noevents``,
  ``filter <header> <value>`` / ``filter delete ...`` (a listener with filters gets only
  events with one matching header), ``linger`` / ``nolinger``;
* ``api <cmd>`` -> ``api/response``; ``bgapi <cmd>`` -> ``+OK Job-UUID: <uuid>`` and, once
  the job ran, a BACKGROUND_JOB event carrying the output as its inner body; every
  executed command also fires an ``API`` event. ``status`` is answered here, every other
  command by the switch model (:class:`SwitchCore`); an unknown one gets
  ``-ERR <cmd> Command not found!``;
* ``exit`` -> ``+OK bye``, the goodbye notice, EOF; anything else ``-ERR command not found``.

Events (:meth:`EslServer.fire`) carry the common header block (``Core-UUID`` ...
``Event-Sequence``) and go only to the listeners subscribed to them, as
``text/event-plain`` (values URL-encoded exactly like ``switch_url_encode``: bytes below
0x20 or above 0x7e and ``\\r\\n "#%&+:;<=>?@[\\]^`{|}``, but an existing ``%XX`` stays) or
``text/event-json`` (same names and order, duplicates kept, every value a string).
HEARTBEAT fires every ``heartbeat_interval`` seconds. :meth:`EslServer.drop_connections`
and :meth:`EslServer.shutdown_notice` play a broken network and a switch shutdown.

:class:`FsChannel` is a channel as events and ``show channels`` show it (the header block
every channel event repeats, the caller profile, the CDR variables of
CHANNEL_HANGUP_COMPLETE), like ``AmiChannel`` in ``ami_server``.

Protocol problems of a client (an over-long line, a refused password) close that
client's connection; nothing is raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

Headers = list[tuple[str, str]]

GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
SHUTTING_DOWN = "The system is being shut down.\n"
VERSION = "1.10.12-release+git~20240802T210227Z~a88d069d6f~64bit"
FS_IP = "192.0.2.2"  # FreeSWITCH-IPv4 (a documentation address, like the traces')
_log = structlog.get_logger(__name__)
_MAX_WRITE_BUFFER = 64 * 1024 * 1024  # a listener this far behind is disconnected
_ORIGINS = {  # Event-Calling-File/-Function/-Line-Number as FreeSWITCH 1.10.12 sends them
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", 626),
    "CHANNEL_PROGRESS": ("switch_channel.c", "switch_channel_perform_mark_ring_ready_value", 3505),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3846),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1689),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1879),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1213),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3445),
    "CHANNEL_HANGUP_COMPLETE": (
        "switch_core_state_machine.c",
        "switch_core_session_reporting_state",
        943,
    ),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", 1584),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", 1572),
    "API": ("switch_loadable_module.c", "switch_api_execute", 2954),
    "HEARTBEAT": ("switch_core.c", "send_heartbeat", 95),
    "SHUTDOWN": ("switch_core.c", "switch_core_destroy", 3023),
    "REQUEST_PARAMS": ("mod_dialplan_xml.c", "dialplan_xml_locate", 630),
}
_UNSAFE = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_ESCAPE = {c: f"%{c:02X}" for c in range(128) if c < 0x20 or c == 0x7F or c in _UNSAFE}
_HEX = frozenset(b"0123456789ABCDEF")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_EVENT_WORD = re.compile(r"[A-Z][A-Z0-9_]*")


def url_encode(value: str) -> str:
    """``switch_url_encode``: escape unsafe and non-ASCII bytes, keep an existing ``%XX``."""
    if value.isascii() and "%" not in value:
        return value.translate(_ESCAPE)
    raw, out, i = value.encode(), [], 0
    while i < len(raw):
        byte = raw[i]
        keep_escape = byte == 0x25 and raw[i + 1 : i + 2] and raw[i + 2 : i + 3]
        if keep_escape and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append("%")
        elif byte < 0x20 or byte > 0x7E or byte in _UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
        i += 1
    return "".join(out)


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # cJSON: UTF-8 as is, controls escaped


def local_stamp(epoch: float) -> str:
    """``Event-Date-Local`` / ``*_stamp``: local time, whole seconds."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def gmt_stamp(epoch: float) -> str:
    """``Event-Date-GMT``: RFC 1123 in English whatever the locale."""
    t = time.gmtime(epoch)
    return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} " + (
        time.strftime("%H:%M:%S GMT", t)
    )


def uptime_text(seconds: float) -> str:
    """``0 years, 0 days, 0 hours, 1 minute, 19 seconds, 523 milliseconds, 492 microseconds``."""
    usec = int(seconds * 1_000_000)
    parts = [
        (usec // (365 * 86_400_000_000), "year"),
        (usec // 86_400_000_000 % 365, "day"),
        (usec // 3_600_000_000 % 24, "hour"),
        (usec // 60_000_000 % 60, "minute"),
        (usec // 1_000_000 % 60, "second"),
        (usec // 1000 % 1000, "millisecond"),
        (usec % 1000, "microsecond"),
    ]
    return ", ".join(f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts)


def frame(content_type: str, body: str = "", **headers: str) -> bytes:
    """One outer frame; ``Content-Length`` counts body bytes."""
    data = body.encode()
    lines = [f"Content-Type: {content_type}"]
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in headers.items()]
    if data:
        lines.append(f"Content-Length: {len(data)}")
    return ("\n".join(lines) + "\n\n").encode() + data


class SwitchCore(Protocol):
    """What the event socket needs from the switch model."""

    def api(self, command: str, argument: str) -> str | None:
        """The ``api/response`` body of a command; None when there is no such command."""
        ...

    def session_counts(self) -> tuple[int, int, int]:
        """Live channels, channels since startup, peak of live channels."""
        ...


class _Event:
    """One fired event; its plain and json encodings are made once, when first needed."""

    __slots__ = ("_frames", "body", "headers", "name", "subclass")

    def __init__(self, name: str, subclass: str, headers: Headers, body: str) -> None:
        self.name, self.subclass, self.headers, self.body = name, subclass, headers, body
        self._frames: dict[str, bytes] = {}

    def frame(self, fmt: str) -> bytes:
        cached = self._frames.get(fmt)
        if cached is None:
            if fmt == "json":
                pairs = [*self.headers]
                if self.body:
                    pairs.append(("Content-Length", str(len(self.body.encode()))))
                    pairs.append(("_body", self.body))
                text = "{" + ",".join(f"{_json(k)}:{_json(v)}" for k, v in pairs) + "}"
            else:
                text = "".join(f"{k}: {url_encode(v)}\n" for k, v in self.headers)
                body_bytes = self.body.encode()
                text += f"Content-Length: {len(body_bytes)}\n\n{self.body}" if body_bytes else "\n"
            data = text.encode()
            head = f"Content-Length: {len(data)}\nContent-Type: text/event-{fmt}\n\n"
            cached = self._frames[fmt] = head.encode() + data
        return cached

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class _Listener:
    """One client connection and its subscription."""

    __slots__ = ("all", "authed", "filters", "fmt", "names", "peer", "subclasses", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.authed = False
        self.all = False
        self.fmt = "plain"
        self.names: set[str] = set()
        self.subclasses: set[str] = set()
        self.filters: list[tuple[str, str]] = []
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}/{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def subscribed(self, name: str, subclass: str) -> bool:
        if not self.authed or not (self.all or name in self.names):
            return False
        return self.all or name != "CUSTOM" or not subclass or subclass in self.subclasses

    def passes(self, event: _Event) -> bool:
        if not self.filters:
            return True
        for name, wanted in self.filters:
            value = event.header(name)
            if value is None:
                continue
            if len(wanted) > 1 and wanted[0] == wanted[-1] == "/":
                if re.search(wanted[1:-1], value):
                    return True
            elif value == wanted:
                return True
        return False


class EslServer:
    """An inbound event-socket server on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        *,
        password: str,
        core: SwitchCore,
        hostname: str = "fs1",
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval: float | None = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._password = password
        self._core = core
        self.hostname = hostname
        self._host, self._port = host, port
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.core_uuid = str(uuid.uuid4())
        self._sequence = 0
        self._server: asyncio.Server | None = None
        self._listeners: set[_Listener] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # connection handlers, jobs, heartbeat
        self._started_at = clock()

    @property
    def port(self) -> int:
        """The TCP port actually bound (after ``start``)."""
        if self._server is None:
            raise RuntimeError("ESL server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen for ESL clients (a restart gets a new Core-UUID, like a new process)."""
        self.core_uuid = str(uuid.uuid4())
        self._started_at = self.clock()
        self._sequence = 0
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self.port  # a restart listens where clients expect it
        if self.heartbeat_interval:
            self._keep(asyncio.create_task(self._heartbeats(self.heartbeat_interval)))

    async def stop(self) -> None:
        """Stop listening, close every connection, end heartbeats and pending jobs."""
        if self._server is None:
            return
        self._server.close()
        for listener in list(self._listeners):
            listener.writer.close()
        self._listeners.clear()
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            if task.get_name() != "esl-connection":
                task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self._server.wait_closed()
        self._server = None

    def drop_connections(self) -> None:
        """Abort every client connection (no notice, like a network failure)."""
        for listener in list(self._listeners):
            listener.writer.transport.abort()
        self._listeners.clear()

    def shutdown_notice(self) -> None:
        """Send every client ``The system is being shut down.`` and close its connection."""
        for listener in list(self._listeners):
            listener.writer.write(frame("text/disconnect-notice", SHUTTING_DOWN))
            listener.writer.close()
        self._listeners.clear()

    def uptime(self) -> float:
        return max(self.clock() - self._started_at, 0.0)

    def wants(self, name: str, subclass: str = "") -> bool:
        """True when some listener is subscribed to the event (filters aside)."""
        return any(listener.subscribed(name, subclass) for listener in self._listeners)

    def event_head(self, name: str, subclass: str = "") -> Headers:
        """The header block every event starts with (takes the next Event-Sequence)."""
        now = self.clock()
        self._sequence += 1
        origin_file, function, line = _ORIGINS.get(name, ("switch_event.c", "switch_event", 0))
        head: Headers = [("Event-Subclass", subclass)] if subclass else []
        return [
            *head,
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", FS_IP),
            ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", local_stamp(now)),
            ("Event-Date-GMT", gmt_stamp(now)),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", origin_file),
            ("Event-Calling-Function", function),
            ("Event-Calling-Line-Number", str(line)),
            ("Event-Sequence", str(self._sequence)),
        ]

    def fire(self, name: str, fields: Headers, *, body: str = "", subclass: str = "") -> None:
        """Send one event (common block + ``fields``) to every listener subscribed to it."""
        targets = [ls for ls in self._listeners if ls.subscribed(name, subclass)]
        if not targets:
            return
        event = _Event(name, subclass, [*self.event_head(name, subclass), *fields], body)
        for listener in targets:
            if listener.passes(event):
                self._send(listener, event.frame(listener.fmt))

    def _send(self, listener: _Listener, data: bytes) -> None:
        transport = listener.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            _log.warning("esl client too slow, disconnecting", peer=listener.peer)
            listener.writer.close()
            self._listeners.discard(listener)
            return
        listener.writer.write(data)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            live, since, peak = self._core.session_counts()
            uptime = self.uptime()
            self.fire(
                "HEARTBEAT",
                [
                    ("Event-Info", "System Ready"),
                    ("Up-Time", uptime_text(uptime)),
                    ("FreeSWITCH-Version", VERSION),
                    ("Uptime-msec", str(int(uptime * 1000))),
                    ("Session-Count", str(live)),
                    ("Max-Sessions", "1000"),
                    ("Session-Per-Sec", "30"),
                    ("Session-Per-Sec-Last", "0"),
                    ("Session-Per-Sec-Max", "0"),
                    ("Session-Per-Sec-FiveMin", "0"),
                    ("Session-Since-Startup", str(since)),
                    ("Session-Peak-Max", str(peak)),
                    ("Session-Peak-FiveMin", str(peak)),
                    ("Idle-CPU", "98.500000"),
                ],
            )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener = _Listener(writer)
        self._listeners.add(listener)
        task = asyncio.current_task()
        if task is not None:
            task.set_name("esl-connection")
            self._keep(task)
        writer.write(frame("auth/request"))
        try:
            while (command := await _read_command(reader)) is not None:
                if not self._handle(listener, command):
                    break
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            _log.debug("esl client dropped", peer=listener.peer, error=str(exc))
        finally:
            self._listeners.discard(listener)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, listener: _Listener, command: str) -> bool:
        """Answer one command; False closes the connection."""
        verb, _, rest = command.partition(" ")
        verb, rest = verb.lower(), rest.strip()
        write = listener.writer.write
        if verb == "exit":
            write(frame("command/reply", Reply_Text="+OK bye"))
            write(frame("text/disconnect-notice", GOODBYE))
            return False
        if not listener.authed:
            if verb != "auth":
                write(frame("command/reply", Reply_Text="-ERR command not found"))
                return True
            if not hmac.compare_digest(rest.encode(), self._password.encode()):
                _log.info("esl auth refused", peer=listener.peer)
                write(frame("command/reply", Reply_Text="-ERR invalid"))
                write(frame("text/disconnect-notice", GOODBYE))
                return False
            listener.authed = True
            write(frame("command/reply", Reply_Text="+OK accepted"))
        elif verb == "api":
            cmd, _, arg = rest.partition(" ")
            write(frame("api/response", self._execute(cmd, arg.strip())))
            self._api_event(cmd, arg.strip())  # queued events follow the response
        elif verb == "bgapi":
            job = str(uuid.uuid4())
            write(frame("command/reply", Reply_Text=f"+OK Job-UUID: {job}", Job_UUID=job))
            self._keep(asyncio.create_task(self._job(job, rest)))
        elif verb in ("event", "nixevent", "noevents", "filter"):
            write(frame("command/reply", Reply_Text=self._subscription(listener, verb, rest)))
        elif verb in ("linger", "nolinger"):
            will = "will linger" if verb == "linger" else "will not linger"
            write(frame("command/reply", Reply_Text=f"+OK {will}"))
        else:
            write(frame("command/reply", Reply_Text="-ERR command not found"))
        return True

    def _execute(self, command: str, argument: str) -> str:
        """Run one API command; its output (the API event is the caller's to fire)."""
        if not command:
            return "-ERR no command specified\n"
        output = self._status() if command == "status" else self._core.api(command, argument)
        return f"-ERR {command} Command not found!\n" if output is None else output

    def _api_event(self, command: str, argument: str) -> None:
        fields = [("API-Command", command)]
        self.fire("API", fields + ([("API-Command-Argument", argument)] if argument else []))

    async def _job(self, job: str, text: str) -> None:
        await asyncio.sleep(0)  # the job runs after its command/reply, like a new thread
        command, _, argument = text.partition(" ")
        output = self._execute(command, argument.strip())
        self._api_event(command, argument.strip())
        fields = [("Job-UUID", job), ("Job-Command", command)]
        self.fire("BACKGROUND_JOB", [*fields, ("Job-Command-Arg", argument.strip())], body=output)

    def _status(self) -> str:
        live, since, peak = self._core.session_counts()
        return (
            f"UP {uptime_text(self.uptime())}\n"
            "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) "
            f"is ready\n{since} session(s) since startup\n"
            f"{live} session(s) - peak {peak}, last 5min {peak} \n"
            "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
            "1000 session(s) max\nmin idle cpu 0.00/98.50\nCurrent Stack Size/Max 240K/8192K\n"
        )

    def _subscription(self, listener: _Listener, verb: str, rest: str) -> str:
        words = rest.split()
        if verb == "noevents":
            listener.all, listener.names, listener.subclasses = False, set(), set()
            return "+OK no longer listening for events"
        if verb == "filter":
            return _filter(listener, words)
        if verb == "event" and words and words[0].lower() in ("plain", "json", "xml"):
            fmt, words = words[0].lower(), words[1:]
            if fmt == "xml":
                return "-ERR xml event format is not simulated"
            listener.fmt = fmt
        custom, count = False, 0
        for word in words:
            if custom:
                (listener.subclasses.add if verb == "event" else listener.subclasses.discard)(word)
            elif _EVENT_WORD.fullmatch(word):
                count += 1
                custom = word == "CUSTOM"
                if verb == "event":
                    listener.all = listener.all or word == "ALL"
                    listener.names.add(word)
                elif word == "ALL":
                    listener.all, listener.names = False, set()
                else:
                    listener.names.discard(word)
        if not count and not custom:
            return "-ERR no keywords supplied"
        if verb == "nixevent":
            return "+OK events nixed"
        return f"+OK event listener enabled {listener.fmt}"


def _filter(listener: _Listener, words: list[str]) -> str:
    if len(words) >= 2 and words[0].lower() == "delete":
        name, value = words[1], " ".join(words[2:])
        if name.lower() == "all":
            listener.filters.clear()
        else:
            kept = [f for f in listener.filters if f[0] != name or value not in ("", f[1])]
            listener.filters = kept
        return f"+OK filter deleted. [{name}]=[{value}]"
    if len(words) < 2:
        return "-ERR invalid syntax"
    name, value = words[0], " ".join(words[1:])
    listener.filters.append((name, value))
    return f"+OK filter added. [{name}]=[{value}]"


async def _read_command(reader: asyncio.StreamReader) -> str | None:
    """One command: its first line (header lines and a Content-Length body are skipped)."""
    lines: list[str] = []
    while True:
        raw = await reader.readline()
        if not raw:
            return None
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line:
            lines.append(line)
            continue
        if not lines:
            continue  # blank lines between commands
        for header in lines[1:]:
            key, _, value = header.partition(":")
            if key.strip().lower() == "content-length" and value.strip().isdigit():
                await reader.readexactly(int(value.strip()))
        return lines[0].strip()


# -- the channel model ------------------------------------------------------------------

STATE_NUMBERS = {
    "CS_NEW": 0, "CS_INIT": 1, "CS_ROUTING": 2, "CS_SOFT_EXECUTE": 3, "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5, "CS_PARK": 6, "CS_CONSUME_MEDIA": 7, "CS_HIBERNATE": 8,
    "CS_RESET": 9, "CS_HANGUP": 10, "CS_REPORTING": 11, "CS_DESTROY": 12,
}  # fmt: skip
SHOW_COLUMNS = [  # FreeSWITCH 1.10 core db ``channels`` table, ``show channels`` column order
    "uuid", "direction", "created", "created_epoch", "name", "state", "cid_name", "cid_num",
    "ip_addr", "dest", "application", "application_data", "dialplan", "context", "read_codec",
    "read_rate", "read_bit_rate", "write_codec", "write_rate", "write_bit_rate", "secure",
    "hostname", "presence_id", "presence_data", "accountcode", "callstate", "callee_name",
    "callee_num", "callee_direction", "call_uuid", "sent_callee_name", "sent_callee_num",
    "initial_cid_name", "initial_cid_num", "initial_ip_addr", "initial_dest",
    "initial_dialplan", "initial_context",
]  # fmt: skip
_CODEC: Headers = [
    (f"Channel-{side}-Codec-{key}", value)
    for side in ("Read", "Write")
    for key, value in (("Name", "PCMU"), ("Rate", "8000"), ("Bit-Rate", "64000"))
]


@dataclass(eq=False, slots=True)
class FsChannel:
    """A channel as FreeSWITCH events show it; times are epoch microseconds (0 = never)."""

    uuid: str
    name: str
    direction: str  # inbound | outbound
    created_us: int
    caller_num: str
    dest: str
    context: str
    caller_name: str = ""
    username: str = ""
    network_addr: str = ""
    callee_name: str = ""
    callee_num: str = ""
    call_uuid: str = ""
    hit_dialplan: bool = True
    state: str = "CS_INIT"  # the running state (Channel-State)
    state_number: int = 2  # the state it is going to (Channel-State-Number)
    call_state: str = "DOWN"
    answer_state: str = "ringing"
    hangup_cause: str = ""
    codec: bool = False
    other: FsChannel | None = None
    other_type: str = ""  # originator | originatee
    profile_index: int = 1
    profile_created_us: int = 0
    transfer_source: str = ""
    answered_us: int = 0
    progress_us: int = 0
    bridged_us: int = 0
    hangup_us: int = 0
    application: str = ""
    application_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)

    def move(self, state: str, call_state: str | None = None, target: str | None = None) -> None:
        """Set the running state (and call state); ``target`` is where it is heading."""
        self.state, self.state_number = state, STATE_NUMBERS[target or state]
        if call_state is not None:
            self.call_state = call_state

    def profile(self, prefix: str) -> Headers:
        """The caller-profile block (``Caller-*`` or ``Other-Leg-*``)."""

        def optional(key: str, value: str) -> Headers:
            return [(f"{prefix}-{key}", value)] if value else []

        times = [
            ("Profile-Created-Time", self.profile_created_us or self.created_us),
            ("Channel-Created-Time", self.created_us),
            ("Channel-Answered-Time", self.answered_us),
            ("Channel-Progress-Time", self.progress_us),
            ("Channel-Progress-Media-Time", 0),
            ("Channel-Hangup-Time", self.hangup_us),
            ("Channel-Transfer-Time", 0),
            ("Channel-Resurrect-Time", 0),
            ("Channel-Bridged-Time", self.bridged_us),
            ("Channel-Last-Hold", 0),
            ("Channel-Hold-Accum", 0),
        ]
        return [
            (f"{prefix}-Direction", self.direction),
            (f"{prefix}-Logical-Direction", self.direction),
            *optional("Username", self.username),
            (f"{prefix}-Dialplan", "XML"),
            *optional("Caller-ID-Name", self.caller_name),
            (f"{prefix}-Caller-ID-Number", self.caller_num),
            *optional("Orig-Caller-ID-Name", self.caller_name),
            (f"{prefix}-Orig-Caller-ID-Number", self.caller_num),
            *optional("Callee-ID-Name", self.callee_name),
            *optional("Callee-ID-Number", self.callee_num),
            *optional("Network-Addr", self.network_addr),
            (f"{prefix}-ANI", self.caller_num),
            (f"{prefix}-Destination-Number", self.dest),
            (f"{prefix}-Unique-ID", self.uuid),
            (f"{prefix}-Source", "mod_sofia"),
            *optional("Transfer-Source", self.transfer_source),
            (f"{prefix}-Context", self.context),
            *optional("RDNIS", self.dest if self.transfer_source else ""),
            (f"{prefix}-Channel-Name", self.name),
            *optional("Profile-Index", "" if prefix == "Other-Leg" else str(self.profile_index)),
            *[(f"{prefix}-{key}", str(value)) for key, value in times],
            (f"{prefix}-Screen-Bit", "true"),
            (f"{prefix}-Privacy-Hide-Name", "false"),
            (f"{prefix}-Privacy-Hide-Number", "false"),
        ]

    def block(self) -> Headers:
        """The channel header block every channel event carries, variables included."""
        headers: Headers = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(self.state_number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-HIT-Dialplan", "true" if self.hit_dialplan else "false"),
            ("Channel-Call-UUID", self.call_uuid or self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause:
            headers.append(("Hangup-Cause", self.hangup_cause))
        if self.codec:
            headers += _CODEC
        headers += self.profile("Caller")
        if self.other is not None:
            headers.append(("Other-Type", self.other_type))
            headers += self.other.profile("Other-Leg")
        headers += [("variable_" + key, value) for key, value in self.variables.items()]
        return headers

    def cdr_variables(self) -> Headers:
        """The variables FreeSWITCH sets at CS_REPORTING (switch_channel_set_timestamps)."""
        start, end, answer = self.created_us, self.hangup_us, self.answered_us
        bridge = self.bridged_us
        marks = [
            ("start", start),
            ("profile_start", self.profile_created_us or start),
            ("answer", answer),
            ("bridge", bridge),
            ("progress", self.progress_us),
            ("progress_media", 0),
            ("end", end),
        ]
        out: Headers = [("digits_dialed", "none")]
        out += [(f"{name}_stamp", local_stamp(us / 1e6)) for name, us in marks if us]
        epochs = [*marks[:4], ("last_hold", 0), ("", 0), *marks[4:]]
        for name, us in epochs:
            if not name:  # hold and resurrect totals sit between last_hold and progress
                out += [(f"hold_accum_{unit}", "0") for unit in ("seconds", "usec", "ms")]
                out += [("resurrect_epoch", "0"), ("resurrect_uepoch", "0")]
            else:
                out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]
        if self.application:
            out += [("last_app", self.application), ("last_arg", self.application_data)]
        cid = f'"{self.caller_name}" <{self.caller_num}>' if self.caller_name else self.caller_num
        out.append(("caller_id", cid))
        spans = [
            ("duration", start, end),
            ("billsec", answer, end),
            ("progresssec", start, self.progress_us),
            ("answersec", start, answer),
            ("waitsec", start, bridge),
            ("progress_mediasec", start, 0),
            ("flow_billsec", start, end),
        ]
        for unit, scale in (("sec", 1_000_000), ("msec", 1000), ("usec", 1)):
            for label, since, until in spans:
                name = label.replace("sec", unit) if label != "duration" else unit[0] + label
                value = until // scale - since // scale if since and until else 0
                out.append((label if unit == "sec" else name, str(value)))
        return out

    def show_row(self, hostname: str) -> dict[str, str]:
        """This channel's row of ``show channels`` (every value a string, NULL as "")."""
        codec = ("PCMU", "8000", "64000") if self.codec else ("", "", "")
        row = dict.fromkeys(SHOW_COLUMNS, "")
        row.update(
            uuid=self.uuid,
            direction=self.direction,
            created=local_stamp(self.created_us / 1e6),
            created_epoch=str(self.created_us // 1_000_000),
            name=self.name,
            state=self.state,
            cid_name=self.caller_name,
            cid_num=self.caller_num,
            ip_addr=self.network_addr,
            dest=self.dest,
            application=self.application,
            application_data=self.application_data,
            dialplan="XML",
            context=self.context,
            read_codec=codec[0],
            read_rate=codec[1],
            read_bit_rate=codec[2],
            write_codec=codec[0],
            write_rate=codec[1],
            write_bit_rate=codec[2],
            hostname=hostname,
            accountcode=self.variables.get("accountcode", ""),
            callstate=self.call_state,
            callee_name=self.callee_name,
            callee_num=self.callee_num,
            callee_direction="SEND" if self.callee_num else "",
            call_uuid=self.call_uuid or self.uuid,
            sent_callee_name=self.callee_name,
            sent_callee_num=self.callee_num,
            initial_cid_name=self.caller_name,
            initial_cid_num=self.caller_num,
            initial_ip_addr=self.network_addr,
            initial_dest=self.dest,
            initial_dialplan="XML",
            initial_context=self.context,
        )
        return row
