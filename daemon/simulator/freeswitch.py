"""The call model of the simulated FreeSWITCH: one inbound SIP call per plan.

A call is the customer's inbound SIP leg (the A leg: ``Call-Direction: inbound``, its
``Unique-ID`` is the billing leg, ``variable_accountcode`` set) and, once authorized, the
outbound carrier leg (``Call-Direction: outbound``, ``variable_originator`` = A,
``Other-Type: originator``, no accountcode). Events follow the FreeSWITCH 1.10.12 traces in
``fixtures/freeswitch``: CHANNEL_CREATE(A), the dialplan lookup, CHANNEL_CREATE(B),
CHANNEL_PROGRESS (B then A), CHANNEL_ANSWER (B then A), CHANNEL_BRIDGE, then
CHANNEL_HANGUP / CHANNEL_HANGUP_COMPLETE (with the CDR variables) / CHANNEL_DESTROY of
each leg: B first when the far end hangs up or fails, A first when A was killed.

Authorization (``auth_mode``):

* ``xml_curl``: mod_xml_curl's dialplan POST (``hostname``, ``section=dialplan``, then the
  REQUEST_PARAMS event: channel headers, variables, ``Hunt-*``) to ``xml_curl_url``; the
  XML answer's matching extension runs: ``set``/``export`` (``execute_on_answer`` too),
  ``sched_hangup``, ``respond``, ``hangup``, ``bridge`` (first route; with
  ``continue_on_fail`` a failed bridge ends NORMAL_CLEARING), ``transfer`` (the static
  target context bridges to the carrier). ``not found``, an HTTP error or an unreachable
  daemon leaves no route: NO_ROUTE_DESTINATION.
* ``park``: CHANNEL_PARK of A in ``park_context`` (unanswered); the daemon continues it
  with ``uuid_transfer <A> <dest> XML <ctx>`` or denies it with ``uuid_kill <A> CAUSE``;
  after ``park_timeout`` it ends RECOVERY_ON_TIMER_EXPIRE.
* ``none`` (or ``CallPlan.authorize=False``): the call goes straight to the carrier.

``sched_hangup +N`` counts like FreeSWITCH's scheduler: from when it runs (the dialplan,
before the bridge, so ring time counts), firing on the first 1-second scheduler tick at
or after whole second ``floor(now) + N``. A bridge failure without ``continue_on_fail``
hangs A up with the carrier's cause, except NO_ANSWER (which continues; the dialplan
then runs out: NORMAL_CLEARING). Only the first route of a ``bridge`` is dialled.

``CallOutcome`` (shared with the Asterisk simulator): ``linkedid`` and ``a_leg_uniqueid``
are A's Unique-ID, ``a_leg_channel`` its name; ``billsec`` is A's exact billusec in
seconds; ``cut_by_daemon``: a ``uuid_kill`` of either leg ended the call (a park denial
too); ``limited_by_switch``: a ``sched_hangup`` (dialplan or API) ended it; ``reason`` is
``rk_auth_reason`` (xml_curl), the kill cause or ``PARK_TIMEOUT`` (park), ``NOT_FOUND`` /
``XML_CURL_FAILURE`` when no dialplan came; ``dial_status`` ANSWER, BUSY, NOANSWER,
CONGESTION, CANCEL (A cut while ringing) or "".

API (``uuid_kill``, ``uuid_exists``, ``uuid_getvar``, ``uuid_setvar``, ``uuid_transfer``
of a parked channel, ``sched_hangup``, ``show channels [as json|count]``) is served over
the event socket of ``daemon.simulator.esl_server``. Errors are those of
``daemon.simulator.asterisk`` (SimulatorError tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit
from xml.etree import ElementTree

import structlog

from daemon.simulator.asterisk import (
    CallOutcome,
    CallPlan,
    SimulatorConfigError,
    SimulatorNotStarted,
)
from daemon.simulator.esl_server import FS_IP, EslServer, FsChannel, Headers, url_encode

AuthMode = Literal["xml_curl", "park", "none"]
_log = structlog.get_logger(__name__)
_CAUSES = {  # FreeSWITCH hangup cause names (switch_channel.c CAUSE_CHART) and numbers
    "NONE": 0, "UNALLOCATED_NUMBER": 1, "NO_ROUTE_TRANSIT_NET": 2, "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6, "NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19, "SUBSCRIBER_ABSENT": 20, "CALL_REJECTED": 21, "NUMBER_CHANGED": 22,
    "DESTINATION_OUT_OF_ORDER": 27, "INVALID_NUMBER_FORMAT": 28, "FACILITY_REJECTED": 29,
    "NORMAL_UNSPECIFIED": 31, "NORMAL_CIRCUIT_CONGESTION": 34, "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41, "SWITCH_CONGESTION": 42, "REQUESTED_CHAN_UNAVAIL": 44,
    "OUTGOING_CALL_BARRED": 52, "INCOMING_CALL_BARRED": 54, "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63, "INCOMPATIBLE_DESTINATION": 88, "RECOVERY_ON_TIMER_EXPIRE": 102,
    "PROTOCOL_ERROR": 111, "INTERWORKING": 127, "SUCCESS": 142, "ORIGINATOR_CANCEL": 487,
    "LOSE_RACE": 502, "MANAGER_REQUEST": 503, "ALLOTTED_TIMEOUT": 602, "MEDIA_TIMEOUT": 604,
    "PROGRESS_TIMEOUT": 607, "GATEWAY_DOWN": 609, "SYSTEM_SHUTDOWN": 701,
}  # fmt: skip
_CAUSE_NAMES = {number: name for name, number in _CAUSES.items()}
_FAILURES = {  # plan outcome -> carrier leg cause, SIP disposition, dial_status
    "busy": ("USER_BUSY", "recv_refuse", "BUSY"),
    "congestion": ("NORMAL_CIRCUIT_CONGESTION", "recv_refuse", "CONGESTION"),
    "noanswer": ("NO_ANSWER", "send_cancel", "NOANSWER"),
}
_SDP = (
    "v=0\r\no=- {id} {id} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\na=ptime:20\r\n"
)
CUSTOMER_IP, CARRIER_HOST = "198.51.100.10", "203.0.113.5"  # documentation addresses


def hangup_cause(text: str) -> tuple[str, int]:
    """``switch_channel_str2cause``: a cause name or number -> (name, Q.850 code)."""
    if text[:1].isdigit():
        number = int("".join(itertools.takewhile(str.isdigit, text)))
        name = _CAUSE_NAMES.get(number, "UNKNOWN")
    else:
        name = text.upper() if text.upper() in _CAUSES else "NONE"  # unknown names: NONE
        number = _CAUSES[name]
    return name, number if number <= 127 else 16


async def post_form(url: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 POST the way mod_xml_curl's libcurl sends it; (status, body)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SimulatorConfigError(f"xml_curl_url must be an http:// URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: freeswitch-xml/1.0\r\n"
        "Accept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        writer.write(head.encode() + body)
        status_line = (await reader.readline()).decode("latin-1")
        headers: dict[str, str] = {}
        while (line := await reader.readline()).strip():
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            data = b""
            while size := int((await reader.readline()).split(b";")[0], 16):
                data += await reader.readexactly(size)
                await reader.readline()
        else:
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    fields = status_line.split()
    return (int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0), data


def dialplan_actions(document: bytes, channel: FsChannel) -> list[tuple[str, str]] | None:
    """The actions of the first matching extension of the channel's context, or None."""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return None
    for section in root.iter("section"):
        if section.get("name") != "dialplan":
            continue
        for context in section.iter("context"):
            if context.get("name") != channel.context:
                continue
            for extension in context.iter("extension"):
                actions: list[tuple[str, str]] | None = []
                for condition in extension.iter("condition"):
                    if not _matches(condition, channel):
                        actions = None
                        break
                    for action in condition.iter("action"):
                        actions += [(action.get("application", ""), action.get("data", ""))]  # type: ignore[operator]
                if actions is not None:
                    return actions
    return None


def _matches(condition: ElementTree.Element, channel: FsChannel) -> bool:
    name, expression = condition.get("field"), condition.get("expression")
    if not name or expression is None:
        return True
    fields = {"destination_number": channel.dest, "caller_id_number": channel.caller_num}
    fields |= {"ani": channel.caller_num, "context": channel.context, "uuid": channel.uuid}
    value = fields.get(name)
    if value is None and name.startswith("${") and name.endswith("}"):
        value = channel.variables.get(name[2:-1], "")
    try:
        return re.search(expression, value or "") is not None
    except re.error:
        return False


@dataclass(slots=True)
class _Route:
    """Where the dialplan sends A: a dial string, or a hangup cause."""

    dial: str = ""
    hangup: str = ""
    continue_on_fail: bool = False
    after: list[tuple[str, str]] = field(default_factory=list)


class SimulatedFreeSWITCH:
    """A fake FreeSWITCH: real ESL server side, real xml_curl client side, simulated calls."""

    def __init__(
        self,
        *,
        esl_password: str,
        xml_curl_url: str,
        switch_name: str = "fs1",
        auth_mode: AuthMode = "xml_curl",
        park_context: str = "authhold",
        esl_host: str = "127.0.0.1",
        esl_port: int = 0,
        clock: Callable[[], float] = time.time,
        context: str = "ratekeeper",
        park_timeout: float = 5.0,
        xml_curl_timeout: float = 10.0,
        heartbeat_interval: float | None = 20.0,
    ) -> None:
        if auth_mode not in ("xml_curl", "park", "none"):
            raise SimulatorConfigError(f"auth_mode must be xml_curl, park or none: {auth_mode!r}")
        if auth_mode == "xml_curl" and not xml_curl_url.startswith("http://"):
            raise SimulatorConfigError(f"xml_curl_url must be an http:// URL: {xml_curl_url!r}")
        self.xml_curl_url, self.switch_name, self.auth_mode = xml_curl_url, switch_name, auth_mode
        self.park_context, self.context, self.clock = park_context, context, clock
        self.park_timeout, self.xml_curl_timeout = park_timeout, xml_curl_timeout
        self.server = EslServer(
            password=esl_password,
            core=self,
            hostname=switch_name,
            host=esl_host,
            port=esl_port,
            heartbeat_interval=heartbeat_interval,
            clock=clock,
        )
        self.rng = random.Random()
        self.legs: dict[str, tuple[FsChannel, _CallRun]] = {}  # live, by Unique-ID
        self.runs: set[_CallRun] = set()
        self.tick_phase = 0.0  # where in each second the scheduler thread wakes
        self._since_startup = self._peak = self._session_id = 0
        self._started = False

    @property
    def esl_port(self) -> int:
        """The ESL TCP port (the bound one when constructed with port 0)."""
        if not self._started:
            raise SimulatorNotStarted("SimulatedFreeSWITCH.esl_port read before start()")
        return self.server.port

    async def start(self) -> None:
        """Start the event socket (again after ``shutdown``: a restart, new Core-UUID)."""
        await self.server.start()
        self.tick_phase = self.clock() % 1.0
        self._started = True
        _log.info("simulated freeswitch started", esl_port=self.server.port)

    async def stop(self) -> None:
        """Stop the event socket (calls in progress finish without listeners)."""
        self._started = False
        await self.server.stop()
        _log.info("simulated freeswitch stopped")

    async def shutdown(self) -> None:
        """``fsctl shutdown``: calls end SYSTEM_SHUTDOWN, SHUTDOWN fires, notice, EOF."""
        runs = list(self.runs)
        for run in runs:
            run.kill(run.a, "SYSTEM_SHUTDOWN", "shutdown")  # A first, like the reconnect trace
        waiters = [asyncio.create_task(run.done.wait()) for run in runs]
        if waiters:
            await asyncio.wait(waiters, timeout=5)
            for waiter in waiters:
                waiter.cancel()
        self.server.fire("SHUTDOWN", [("Event-Info", "System Shutting Down")])
        self.server.shutdown_notice()
        await self.stop()

    async def place_call(self, plan: CallPlan) -> CallOutcome:
        """Run one call from CHANNEL_CREATE to its last HANGUP_COMPLETE."""
        if not self._started:
            raise SimulatorNotStarted("SimulatedFreeSWITCH.place_call before start()")
        run = _CallRun(self, plan)
        self.runs.add(run)
        try:
            return await run.run()
        finally:
            self.runs.discard(run)
            for leg in run.legs:
                self.legs.pop(leg.uuid, None)
            run.done.set()

    def live_channels(self) -> list[dict[str, str]]:
        """``show channels`` rows of every live channel, oldest first."""
        legs = sorted((leg for leg, _run in self.legs.values()), key=lambda ch: ch.created_us)
        return [leg.show_row(self.switch_name) for leg in legs]

    def now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def new_leg(self, run: _CallRun, **fields: str) -> FsChannel:
        """A registered channel with a fresh Unique-ID, created now."""
        leg_uuid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        leg = FsChannel(uuid=leg_uuid, created_us=self.now_us(), **fields)  # type: ignore[arg-type]
        self._session_id += 1
        self._since_startup += 1
        leg.variables |= {"direction": leg.direction, "uuid": leg.uuid}
        leg.variables["call_uuid"] = leg.call_uuid or leg.uuid
        leg.variables["session_id"] = str(self._session_id)
        self.legs[leg.uuid] = (leg, run)
        self._peak = max(self._peak, len(self.legs))
        run.legs.append(leg)
        return leg

    def session_counts(self) -> tuple[int, int, int]:
        """Live channels, channels since startup, peak (for ``status`` and HEARTBEAT)."""
        return len(self.legs), self._since_startup, self._peak

    def dialplan_form(self, leg: FsChannel) -> bytes:
        """The body mod_xml_curl posts for a dialplan lookup of ``leg``."""
        fields = [*self.server.event_head("REQUEST_PARAMS"), *leg.block(), *leg.profile("Hunt")]
        basic = f"hostname={self.switch_name}&section=dialplan&tag_name=&key_name=&key_value="
        return (basic + "".join(f"&{url_encode(k)}={url_encode(v)}" for k, v in fields)).encode()

    # -- API commands over the event socket ---------------------------------------------
    def api(self, command: str, argument: str) -> str | None:
        """The ``api/response`` body of a channel command (None: not a command of ours)."""
        args = argument.split()
        if command == "show":
            return self._show(args)
        if command not in ("uuid_kill", "uuid_exists", "uuid_getvar", "uuid_setvar") and (
            command not in ("uuid_transfer", "sched_hangup")
        ):
            return None
        named = args[1:2] if command == "sched_hangup" else args[:1]
        entry = self.legs.get(named[0]) if named else None
        if command == "uuid_exists":
            return "true" if entry else "false"
        usage = {
            "uuid_kill": "<uuid> [cause]",
            "uuid_getvar": "<uuid> <var>",
            "uuid_setvar": "<uuid> <var> [value]",
            "uuid_transfer": "<uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]",
            "sched_hangup": "[+]<time> <uuid> [<cause>]",
        }[command]
        minimum = {"uuid_kill": 1, "uuid_getvar": 2, "uuid_setvar": 2}.get(command, 2)
        if len(args) < minimum:
            return f"-USAGE: {usage}\n"
        if entry is None:
            return "-ERR No such channel!\n"
        leg, run = entry
        if command == "uuid_kill":
            run.kill(leg, args[1] if len(args) > 1 else "NORMAL_CLEARING", "daemon")
        elif command == "uuid_getvar":
            return leg.variables.get(args[1], "_undef_")
        elif command == "uuid_setvar":
            if len(args) > 2:
                leg.variables[args[1]] = " ".join(args[2:])
            else:
                leg.variables.pop(args[1], None)
        elif command == "sched_hangup":
            run.schedule_hangup(args[0], args[2] if len(args) > 2 else "ALLOTTED_TIMEOUT")
        else:
            words = [word for word in args[1:] if word not in ("-bleg", "-both")]
            if not words:
                return f"-USAGE: {usage}\n"
            context = words[2] if len(words) > 2 else "default"
            if leg is not run.a or not run.continue_parked(words[0], context):
                return "-ERR simulator: only a parked channel can be transferred\n"
        return "+OK\n"

    def _show(self, args: list[str]) -> str:
        if not args or args[0] != "channels":
            return "-USAGE: channels [count|as json] (the simulator shows channels only)\n"
        rows = self.live_channels()
        if args[1:] == ["as", "json"]:
            if not rows:
                return '{"row_count":0}\n'
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":")) + "\n"
        if args[1:] == ["count"] or not rows:
            return f"\n{len(rows)} total.\n"
        lines = [",".join(row.values()) for row in rows]
        return ",".join(rows[0]) + "\n" + "\n".join(lines) + f"\n\n{len(rows)} total.\n"


class _CallRun:
    """One call's script: emits its events in the real order and waits between them."""

    def __init__(self, sim: SimulatedFreeSWITCH, plan: CallPlan) -> None:
        self.sim, self.plan = sim, plan
        self.legs: list[FsChannel] = []
        self.a: FsChannel
        self.b: FsChannel | None = None
        self.done, self.wakeup = asyncio.Event(), asyncio.Event()
        self.ended, self.end_cause, self.end_by = False, "", ""
        self.end_leg: FsChannel | None = None
        self.limit_at: float | None = None  # loop time of the scheduled hangup
        self.limit_cause = "ALLOTTED_TIMEOUT"
        self.max_usage: int | None = None
        self.parked = False
        self.transfer: tuple[str, str] | None = None
        self.on_answer: list[tuple[str, str]] = []
        self.finals: dict[str, dict[str, str]] = {}  # variables set once a leg reports
        self.authorized: bool | None = None
        self.reason = self.dial_status = ""

    # -- requests from the event socket (synchronous) -----------------------------------
    def kill(self, leg: FsChannel, cause: str, by: str) -> None:
        if not self.ended:
            self.ended, self.end_cause, self.end_by, self.end_leg = True, cause, by, leg
            self.wakeup.set()

    def schedule_hangup(self, when: str, cause: str) -> None:
        """``sched_hangup``: ``+N`` from now (whole seconds, scheduler ticks) or an epoch."""
        digits = when.lstrip("+")
        if not digits.isdigit():
            return
        now = self.sim.clock()
        fire = math.floor(now) + int(digits) if when.startswith("+") else int(digits)
        delay = max(fire + self.sim.tick_phase - now, 0.0)
        self.limit_at = asyncio.get_running_loop().time() + delay
        self.limit_cause = cause
        if when.startswith("+") and self.max_usage is None:
            self.max_usage = int(digits)
        self.wakeup.set()

    def continue_parked(self, dest: str, context: str) -> bool:
        if not self.parked or self.transfer is not None:
            return False
        self.transfer = (dest, context)
        self.wakeup.set()
        return True

    async def wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        """Sleep ``seconds`` unless the call is cut or ``until()`` holds; True when cut."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(seconds, 0.0)
        await asyncio.sleep(0)  # even a zero wait lets listeners (and the daemon) run
        while not self.ended and not until():
            now = loop.time()
            if self.limit_at is not None and self.limit_at <= now:
                self.kill(self.a, self.limit_cause, "limit")
                break
            wake = deadline if self.limit_at is None else min(deadline, self.limit_at)
            if wake <= now:
                return False
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake - now):
                    await self.wakeup.wait()
        return self.ended

    # -- the call -----------------------------------------------------------------------
    async def run(self) -> CallOutcome:
        sim, plan = self.sim, self.plan
        mode = sim.auth_mode if plan.authorize else "none"
        context = {"park": sim.park_context, "none": "default"}.get(mode, sim.context)
        self.a = a = sim.new_leg(
            self,
            name=f"sofia/external/{plan.caller}@{CUSTOMER_IP}",
            direction="inbound",
            caller_num=plan.caller,
            caller_name=plan.caller,
            username=plan.caller,
            network_addr=CUSTOMER_IP,
            dest=plan.callee,
            context=context,
        )
        a.codec = True
        a.variables |= _inbound_variables(a, plan.account, self.sim.rng)
        self.fire("CHANNEL_CREATE", a)
        if mode == "xml_curl":
            route = await self.xml_curl()
        elif mode == "park":
            route = await self.park()
        else:
            route = _Route(dial=f"sofia/gateway/carrier/{plan.callee}")
        if self.ended or route.hangup:
            self.end_alone(self.end_cause if self.ended else route.hangup)
        else:
            await self.bridge(route)
        return self.outcome()

    async def xml_curl(self) -> _Route:
        sim, a = self.sim, self.a
        a.move("CS_ROUTING")
        try:
            async with asyncio.timeout(sim.xml_curl_timeout):
                status, document = await post_form(sim.xml_curl_url, sim.dialplan_form(a))
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            _log.warning("xml_curl lookup failed", call=a.uuid, error=repr(exc))
            status, document = 0, b""
        actions = dialplan_actions(document, a) if status == 200 else None
        if actions is None:
            self.authorized = False
            self.reason = "NOT_FOUND" if status == 200 else "XML_CURL_FAILURE"
            return _Route(hangup="NO_ROUTE_DESTINATION")
        a.move("CS_EXECUTE", "RINGING")
        route = self.execute(actions)
        result = a.variables.get("rk_auth_result")
        self.authorized = result == "ALLOW" if result else bool(route.dial)
        self.reason = a.variables.get("rk_auth_reason", "")
        duration = a.variables.get("rk_max_duration", "")
        if duration.isdigit():
            self.max_usage = int(duration)
        return route

    def execute(self, actions: list[tuple[str, str]]) -> _Route:
        """Run dialplan applications in order until one takes the call elsewhere."""
        a = self.a
        for index, (app, data) in enumerate(actions):
            a.application, a.application_data = app, data
            a.variables["current_application"] = app
            if app in ("set", "export"):
                name, _, value = data.partition("=")
                if name == "execute_on_answer":
                    app_name, _, app_data = value.partition(" ")
                    self.on_answer.append((app_name, app_data))
                else:
                    a.variables[name] = value
            elif app == "sched_hangup":
                when, _, cause = data.partition(" ")
                self.schedule_hangup(when, cause.strip() or "ALLOTTED_TIMEOUT")
            elif app == "hangup":
                return _Route(hangup=data or "NORMAL_CLEARING")
            elif app == "bridge":
                carry_on = a.variables.get("continue_on_fail", "") == "true"
                return _Route(dial=data, continue_on_fail=carry_on, after=actions[index + 1 :])
            elif app == "transfer":
                words = data.split()
                self.transfer_to(words[0] if words else a.dest, words[2] if len(words) > 2 else "")
                return _Route(dial=f"sofia/gateway/carrier/{a.dest}")
        return _Route(hangup="NORMAL_CLEARING")  # the dialplan ran out

    async def park(self) -> _Route:
        a = self.a
        a.move("CS_EXECUTE", "RINGING")
        a.application, a.variables["current_application"] = "park", "park"
        a.variables["park_timeout"] = f"{self.sim.park_timeout:g}:RECOVERY_ON_TIMER_EXPIRE"
        self.fire("CHANNEL_PARK", a)
        self.parked = True
        cut = await self.wait(self.sim.park_timeout, until=lambda: self.transfer is not None)
        self.parked = False
        if cut:
            self.authorized, self.reason = False, hangup_cause(self.end_cause)[0]
            return _Route()
        if self.transfer is None:
            self.authorized, self.reason = False, "PARK_TIMEOUT"
            return _Route(hangup="RECOVERY_ON_TIMER_EXPIRE")
        self.fire("CHANNEL_UNPARK", a)
        self.transfer_to(*self.transfer)
        self.authorized, self.reason = True, a.variables.get("rk_auth_reason", "OK")
        return _Route(dial=f"sofia/gateway/carrier/{a.dest}")

    def transfer_to(self, dest: str, context: str) -> None:
        a, now = self.a, self.sim.now_us()
        source = f"{now // 1_000_000}:{uuid.uuid4()}:bl_xfer:{dest}/{context}/XML"
        a.dest, a.context = dest, context or a.context
        a.profile_index, a.profile_created_us, a.transfer_source = 2, now, source
        a.variables |= {"max_forwards": "69", "transfer_history": source, "transfer_source": source}

    async def bridge(self, route: _Route) -> None:
        plan, a, sim = self.plan, self.a, self.sim
        first = route.dial.split("|")[0].split(",")[0]
        target = re.sub(r"^(\{[^}]*\}|\[[^\]]*\]|<[^>]*>)+", "", first)
        gateway = re.fullmatch(r"sofia/gateway/[^/]+/(.+)", target)
        number = gateway.group(1) if gateway else target.rsplit("/", 1)[-1].split("@")[0]
        if a.state != "CS_EXECUTE":
            a.move("CS_EXECUTE", "RINGING")
        a.application, a.application_data = "bridge", route.dial
        a.variables |= {"current_application": "bridge", "current_application_data": route.dial}
        self.b = b = sim.new_leg(
            self,
            name=f"sofia/external/{number}" if gateway or not target else target,
            direction="outbound",
            caller_num=a.caller_num,
            dest=number or plan.callee,
            context=a.context,
            callee_name="Outbound Call",
            callee_num=number or plan.callee,
            call_uuid=a.uuid,
        )
        b.hit_dialplan, b.other, b.other_type = False, a, "originator"
        b.variables |= _outbound_variables(b, a)
        self.fire("CHANNEL_CREATE", b)
        if plan.outcome in ("answer", "noanswer"):
            now = sim.now_us()
            b.move("CS_CONSUME_MEDIA")
            b.progress_us = a.progress_us = now
            b.variables |= _progress_variables(b)
            self.fire("CHANNEL_PROGRESS", b)
            self.fire("CHANNEL_PROGRESS", a)
        if await self.wait(plan.ring_seconds):
            if self.end_leg is b:  # the carrier leg was killed: the bridge fails
                self.fail(route, (self.end_cause, "send_cancel", "CANCEL"))
                return
            self.dial_status = "CANCEL"
            self.hangup(a, self.end_cause, "send_refuse")
            self.hangup(b, "ORIGINATOR_CANCEL", "send_cancel")
            self.complete(a)
            self.complete(b)
            return
        if plan.outcome != "answer":
            self.fail(route, _FAILURES[plan.outcome])
            return
        self.answer(a, b)
        cut = await self.wait(plan.talk_seconds)
        first_leg = (self.end_leg or a) if cut else b
        cause = self.end_cause if cut else "NORMAL_CLEARING"
        if first_leg is b:
            self.hangup(b, cause, "send_bye" if cut else "recv_bye")
            self.complete(b)
            self.unbridge(a, b)
            self.hangup(a, cause, "send_bye")
            self.complete(a)
        else:
            self.hangup(a, cause, "send_bye")
            self.unbridge(a, b)
            self.hangup(b, cause, "send_bye")
            self.complete(a)
            self.complete(b)

    def answer(self, a: FsChannel, b: FsChannel) -> None:
        now = self.sim.now_us()
        b.codec, b.answered_us, b.answer_state, b.call_state = True, now, "answered", "RINGING"
        b.variables |= _answer_variables(b)
        self.fire("CHANNEL_ANSWER", b)
        a.answered_us, a.answer_state = now, "answered"
        a.callee_name = a.callee_num = b.callee_num
        a.variables |= {"endpoint_disposition": "ANSWER", "originate_disposition": "SUCCESS"}
        a.variables["DIALSTATUS"] = "SUCCESS"
        a.variables["originated_legs"] = f"{b.uuid};Outbound Call;{b.dest}"
        self.fire("CHANNEL_ANSWER", a)
        a.bridged_us = b.bridged_us = now
        a.call_state = b.call_state = "ACTIVE"
        a.other, a.other_type, b.callee_name = b, "originatee", b.callee_num
        b.move("CS_EXCHANGE_MEDIA")
        a.variables |= {"originate_causes": f"{b.uuid};NONE", "signal_bond": b.uuid}
        self.fire("CHANNEL_BRIDGE", a, _bridge_ids(a, b))
        self.dial_status = "ANSWER"
        on_answer = list(self.on_answer)
        api_set = a.variables.get("execute_on_answer", "")  # uuid_setvar over ESL
        if api_set:
            app_name, _, app_data = api_set.partition(" ")
            on_answer.append((app_name, app_data))
        for app, data in on_answer:
            if app == "sched_hangup":
                when, _, cause = data.partition(" ")
                self.schedule_hangup(when, cause.strip() or "ALLOTTED_TIMEOUT")

    def unbridge(self, a: FsChannel, b: FsChannel) -> None:
        a.variables |= {"last_bridge_to": b.uuid, "bridge_channel": b.name, "bridge_uuid": b.uuid}
        cause = b.hangup_cause or self.end_cause or "NORMAL_CLEARING"
        a.variables |= {"last_bridge_hangup_cause": cause, "bridge_hangup_cause": cause}
        self.fire("CHANNEL_UNBRIDGE", a, _bridge_ids(a, b))

    def fail(self, route: _Route, failure: tuple[str, str, str]) -> None:
        """The carrier leg failed (busy, congestion, no answer): B ends first, then A."""
        a, b = self.a, self.b
        assert b is not None
        cause, disposition, self.dial_status = failure
        cause = hangup_cause(cause)[0]
        a.variables |= {"originate_disposition": cause, "DIALSTATUS": cause}
        a.variables["originate_causes"] = f"{b.uuid};{cause}"
        self.hangup(b, cause, disposition)
        self.complete(b)
        a_cause = cause
        if route.continue_on_fail or cause == "NO_ANSWER":  # switch_channel_handle_cause
            after = [data for app, data in route.after if app == "hangup"]
            a_cause = (after[0] or "NORMAL_CLEARING") if after else "NORMAL_CLEARING"
        self.hangup(a, a_cause, "send_refuse")
        self.complete(a)

    def end_alone(self, cause: str) -> None:
        """A ends before any carrier leg: denied, no route, park timeout, or cut."""
        self.hangup(self.a, cause, "send_refuse")
        self.complete(self.a)

    def hangup(self, leg: FsChannel, cause: str, disposition: str) -> None:
        name, q850 = hangup_cause(cause)
        leg.hangup_us, leg.hangup_cause, leg.answer_state = self.sim.now_us(), name, "hangup"
        leg.move(leg.state, target="CS_HANGUP")
        self.finals[leg.uuid] = {"sip_hangup_disposition": disposition, "hangup_cause": name}
        self.finals[leg.uuid]["hangup_cause_q850"] = str(q850)
        self.fire("CHANNEL_HANGUP", leg)

    def complete(self, leg: FsChannel) -> None:
        """CS_REPORTING: the hangup variables and CDR timestamps, then HANGUP_COMPLETE."""
        leg.move("CS_REPORTING", "HANGUP")
        leg.variables |= self.finals.pop(leg.uuid, {})
        leg.variables |= dict(leg.cdr_variables())
        if leg.answered_us:
            packets = (leg.hangup_us - leg.answered_us) // 20_000
            for way in ("in", "out"):
                leg.variables[f"rtp_audio_{way}_raw_bytes"] = str(packets * 172)
                leg.variables[f"rtp_audio_{way}_media_bytes"] = str(packets * 160)
                leg.variables[f"rtp_audio_{way}_packet_count"] = str(packets)
        self.fire("CHANNEL_HANGUP_COMPLETE", leg, [("Hangup-Cause", leg.hangup_cause)])
        self.sim.legs.pop(leg.uuid, None)
        self.fire("CHANNEL_DESTROY", leg)

    def fire(self, name: str, leg: FsChannel, before: Headers | None = None) -> None:
        if self.sim.server.wants(name):
            self.sim.server.fire(name, [*(before or []), *leg.block()])

    def outcome(self) -> CallOutcome:
        a = self.a
        billsec = Decimal(a.hangup_us - a.answered_us).scaleb(-6) if a.answered_us else None
        return CallOutcome(
            linkedid=a.uuid,
            a_leg_uniqueid=a.uuid,
            authorized=self.authorized,
            reason=self.reason,
            max_usage=self.max_usage,
            answered=billsec is not None,
            cut_by_daemon=self.end_by == "daemon",
            limited_by_switch=self.end_by == "limit",
            billsec=billsec if billsec is not None else Decimal("0.000000"),
            dial_status=self.dial_status,
            a_leg_channel=a.name,
        )


def _bridge_ids(a: FsChannel, b: FsChannel) -> Headers:
    return [("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)]


def _inbound_variables(a: FsChannel, account: str, rng: random.Random) -> dict[str, str]:
    """The variables mod_sofia sets on an INVITE from the customer's PBX (directory user)."""
    caller, dest, pbx, fs = a.caller_num, a.dest, CUSTOMER_IP, FS_IP
    tag = f"{rng.getrandbits(48):012x}"
    sdp = _SDP.format(id=rng.randrange(10**9), ip=pbx, port=rng.randrange(16384, 32768))
    return {
        "sip_from_user": caller, "sip_from_uri": f"{caller}@{pbx}", "sip_from_host": pbx,
        "channel_name": a.name, "sip_call_id": f"{rng.getrandbits(128):032x}@{pbx}",
        "sip_local_network_addr": fs, "sip_network_ip": pbx, "sip_network_port": "5060",
        "sip_received_ip": pbx, "sip_received_port": "5060", "sip_via_protocol": "udp",
        "sip_authorized": "true", "sip_number_alias": caller, "sip_auth_username": caller,
        "sip_auth_realm": fs, "number_alias": caller, "user_name": caller, "domain_name": fs,
        "accountcode": account, "user_context": a.context, "sip_from_user_stripped": caller,
        "sip_from_tag": tag, "sofia_profile_name": "external",
        "sofia_profile_url": f"sip:mod_sofia@{fs}:5080", "recovery_profile_name": "external",
        "sip_full_via": f"SIP/2.0/UDP {pbx}:5060;rport=5060;branch=z9hG4bK{tag}",
        "sip_full_from": f'"{caller}" <sip:{caller}@{pbx}>;tag={tag}',
        "sip_full_to": f"<sip:{dest}@{fs}:5080>",
        "sip_allow": "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY",
        "sip_req_user": dest, "sip_req_uri": f"{dest}@{fs}:5080", "sip_to_user": dest,
        "sip_to_uri": f"{dest}@{fs}:5080", "sip_contact_user": caller,
        "sip_contact_uri": f"{caller}@{pbx}:5060", "sip_user_agent": "Customer-PBX/22.0",
        "max_forwards": "70", "switch_r_sdp": sdp,
        "ep_codec_string": "CORE_PCM_MODULE.PCMU@8000h@20i@64000b", "remote_media_ip": pbx,
        "rtp_use_codec_name": "PCMU", "rtp_use_codec_rate": "8000", "rtp_use_codec_ptime": "20",
        "read_codec": "PCMU", "read_rate": "8000", "write_codec": "PCMU", "write_rate": "8000",
        "dtmf_type": "rfc2833", "endpoint_disposition": "RECEIVED",
    }  # fmt: skip


def _outbound_variables(b: FsChannel, a: FsChannel) -> dict[str, str]:
    """mod_sofia's variables on a new outbound leg bridged for ``a``."""
    return {
        "is_outbound": "true", "sip_profile_name": "external", "channel_name": b.name,
        "sip_destination_url": f"sip:{b.dest}@{CARRIER_HOST}", "max_forwards": "69",
        "originator_codec": "PCMU@8000h@20i", "originator": a.uuid, "signal_bond": a.uuid,
        "originate_early_media": "true", "originating_leg_uuid": a.uuid,
        "originate_endpoint": "sofia", "local_media_ip": FS_IP, "advertised_media_ip": FS_IP,
        "sip_req_uri": f"{b.dest}@{CARRIER_HOST}", "sip_to_host": CARRIER_HOST,
        "sip_from_host": FS_IP, "sofia_profile_name": "external",
        "recovery_profile_name": "external",
    }  # fmt: skip


def _progress_variables(b: FsChannel) -> dict[str, str]:
    """What the carrier's ``180 Ringing`` teaches the outbound leg."""
    return {
        "sip_reply_host": CARRIER_HOST, "sip_reply_port": "5060", "sip_network_ip": CARRIER_HOST,
        "sip_user_agent": "Carrier-SBC", "sip_to_user": b.dest, "sip_call_id": f"{b.uuid}@{FS_IP}",
        "sip_to_tag": b.uuid[:13].replace("-", ""), "sip_cseq": "1",
    }  # fmt: skip


def _answer_variables(b: FsChannel) -> dict[str, str]:
    """What the carrier's ``200 OK`` teaches the outbound leg."""
    return {
        "remote_media_ip": CARRIER_HOST, "rtp_use_codec_name": "PCMU", "read_codec": "PCMU",
        "read_rate": "8000", "write_codec": "PCMU", "write_rate": "8000",
        "endpoint_disposition": "ANSWER", "sip_term_status": "200",
    }  # fmt: skip
