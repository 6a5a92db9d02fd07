"""The call model of the simulated Asterisk: one Originate-style Local call per plan.

Each call emits on AMI the event sequence, headers and field names of the real Asterisk
22 traces (``fixtures/asterisk/fastagi_authorize_dial_limit.ami`` for authorized calls,
``a_b_bridged_call`` / ``busy_and_congestion`` / ``no_answer`` / ``ami_hangup_cutoff``
for the outcomes): the ``;1``/``;2`` halves of ``Local/<callee>@outbound-XXXXXXXX``,
the FastAGI ``authorize`` request from the ``;2`` half (the A leg), ``Dial`` of
``Local/<callee>@carrier-XXXXXXXX;1`` with its ``L()`` limit from ``AUTH_MAXSECS``, the
bridge, the Hangups and the ``Cdr`` events (the A-leg Cdr before the A-leg Hangup).
CEL and DeviceStateChange events are not modelled.

Errors::

    SimulatorError               (code SIMULATOR_ERROR)
    ├── SimulatorNotStarted      (SIMULATOR_NOT_STARTED) place_call/ami_port before start()
    └── SimulatorConfigError     (SIMULATOR_CONFIG, also a ValueError) a bad plan or rate
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import structlog

from daemon.simulator.agi_client import asterisk_env, run_fastagi
from daemon.simulator.ami_server import AmiChannel, AmiServer, ChannelEvents, Fields

_log = structlog.get_logger(__name__)

Outcome = Literal["answer", "busy", "noanswer", "congestion"]
_OUTCOMES = ("answer", "busy", "noanswer", "congestion")
_DISPOSITION = {"NOANSWER": "NO ANSWER", "CANCEL": "NO ANSWER", "BUSY": "BUSY"}


class SimulatorError(Exception):
    """Base of the simulator's errors."""

    code = "SIMULATOR_ERROR"


class SimulatorNotStarted(SimulatorError):
    """The simulator was used before ``start()``."""

    code = "SIMULATOR_NOT_STARTED"


class SimulatorConfigError(SimulatorError, ValueError):
    """A call plan or load setting that cannot be simulated (names the field)."""

    code = "SIMULATOR_CONFIG"


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What one simulated call does: who calls whom, how long it rings and talks."""

    account: str
    caller: str
    callee: str
    ring_seconds: float
    talk_seconds: float
    outcome: Outcome = "answer"
    authorize: bool = True

    def __post_init__(self) -> None:
        if not self.callee:
            raise SimulatorConfigError("CallPlan.callee must not be empty")
        for name in ("ring_seconds", "talk_seconds"):
            if not getattr(self, name) >= 0:
                raise SimulatorConfigError(f"CallPlan.{name} must be >= 0: {getattr(self, name)}")
        if self.outcome not in _OUTCOMES:
            raise SimulatorConfigError(f"CallPlan.outcome must be one of {_OUTCOMES}")


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What happened to one simulated call (billsec: A-leg Hangup - DialEnd ANSWER)."""

    linkedid: str
    a_leg_uniqueid: str
    authorized: bool | None  # None: the call skipped the FastAGI step
    reason: str
    max_usage: int | None
    answered: bool
    cut_by_daemon: bool
    limited_by_switch: bool
    billsec: Decimal
    dial_status: str = ""  # DialEnd DialStatus, "" when the call never dialed
    a_leg_channel: str = ""


class _Call:
    """Shared state of one call: its channels and the AMI hangup request, if any."""

    def __init__(self) -> None:
        self.cut = asyncio.Event()
        self.cut_channel = ""
        self.cut_cause = 16

    async def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless an AMI Hangup arrives first; True when cut."""
        if self.cut.is_set():
            return True
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await self.cut.wait()
        except TimeoutError:
            return False
        return True


class SimulatedAsterisk:
    """A fake Asterisk: real AMI server side, real FastAGI client side, simulated calls."""

    def __init__(
        self,
        *,
        ami_username: str,
        ami_secret: str,
        fastagi_host: str,
        fastagi_port: int,
        ami_host: str = "127.0.0.1",
        ami_port: int = 0,
        agi_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fastagi_host = fastagi_host
        self.fastagi_port = fastagi_port
        self.agi_timeout = agi_timeout
        self.clock = clock
        self.server = AmiServer(
            username=ami_username,
            secret=ami_secret,
            registry=self,
            host=ami_host,
            port=ami_port,
            clock=clock,
        )
        self.rng = random.Random()
        self.channels: dict[str, tuple[AmiChannel, _Call]] = {}  # live, by name
        self._uid_seq = 0
        self._local_seq = 0
        self._started = False

    @property
    def ami_port(self) -> int:
        """The AMI TCP port (the bound one when constructed with port 0)."""
        if not self._started:
            raise SimulatorNotStarted("SimulatedAsterisk.ami_port read before start()")
        return self.server.port

    async def start(self) -> None:
        """Start the AMI server."""
        await self.server.start()
        self._started = True
        _log.info("simulated asterisk started", ami_port=self.server.port)

    async def stop(self) -> None:
        """Stop the AMI server (calls in progress finish without listeners)."""
        self._started = False
        await self.server.stop()
        _log.info("simulated asterisk stopped")

    async def place_call(self, plan: CallPlan) -> CallOutcome:
        """Run one call from Newchannel to its last Hangup; returns what happened."""
        if not self._started:
            raise SimulatorNotStarted("SimulatedAsterisk.place_call before start()")
        run = _CallRun(self, plan)
        try:
            return await run.run()
        finally:
            for channel in run.channels:
                self.channels.pop(channel.name, None)

    def live_channels(self) -> list[Fields]:
        """``CoreShowChannel`` fields of every live channel."""
        now = self.clock()
        return [ch.show_fields(now) for ch, _call in self.channels.values()]

    def request_hangup(self, channel: str, cause: int) -> bool:
        """AMI ``Hangup``: flag the channel's call to end now; False if no such channel."""
        entry = self.channels.get(channel)
        if entry is None:
            return False
        call = entry[1]
        if not call.cut.is_set():
            call.cut_channel, call.cut_cause = channel, cause
            call.cut.set()
        return True

    def new_local_pair(
        self, call: _Call, callee: str, context: str, linkedid: str = ""
    ) -> tuple[AmiChannel, AmiChannel]:
        """The ``;1``/``;2`` halves of ``Local/<callee>@<context>-XXXXXXXX``, registered."""
        self._local_seq += 1
        base = f"Local/{callee}@{context}-{self._local_seq:08x}"
        halves: list[AmiChannel] = []
        for half in (1, 2):
            now = self.clock()
            self._uid_seq += 1
            uid = f"{int(now)}.{self._uid_seq}"
            linked = linkedid or (uid if half == 1 else halves[0].linkedid)
            ch = AmiChannel(f"{base};{half}", uid, linked, context, callee, now)
            halves.append(ch)
            self.channels[ch.name] = (ch, call)
        return halves[0], halves[1]


class _CallRun(ChannelEvents):
    """One call's script: emits its events in the real order and waits between them."""

    def __init__(self, sim: SimulatedAsterisk, plan: CallPlan) -> None:
        super().__init__(sim.server, caller=plan.caller, callee=plan.callee, account=plan.account)
        self.sim, self.plan, self.call = sim, plan, _Call()
        self.channels: list[AmiChannel] = []
        self.answer_ts: str | None = None
        self.auth_note = ""
        self.dial_data = ""
        self.dial_priority = 3
        self.answer_mono = 0.0
        self.result: tuple[bool | None, int | None, str] = (None, None, "")
        self.o1: AmiChannel  # the Originate's ;1 half (Linkedid)
        self.o2: AmiChannel  # the ;2 half: the A leg that runs AGI and Dial
        self.c1: AmiChannel  # the B leg (DestChannel of Dial)
        self.c2: AmiChannel  # the far end in [carrier]

    def hangup(self, ch: AmiChannel, cause: int) -> str:
        self.sim.channels.pop(ch.name, None)
        return super().hangup(ch, cause)

    def local_pair(self, context: str) -> tuple[AmiChannel, AmiChannel]:
        linkedid = self.o1.linkedid if self.channels else ""  # B legs join the call
        one, two = self.sim.new_local_pair(self.call, self.plan.callee, context, linkedid)
        self.channels += [one, two]
        two.state = 4
        self.ev("Newchannel", one)
        self.ev("Newchannel", two)
        return one, two

    # -- the call --------------------------------------------------------------------
    async def run(self) -> CallOutcome:
        p = self.plan
        self.o1, self.o2 = o1, o2 = self.local_pair("outbound")
        self.exten(o1, "AppDial2", "(Outgoing Line)")
        self.identify(o1, p.caller, p.caller, "acct")
        self.identify(o2, p.caller, p.caller, "cid")
        self.ev("LocalBridge", None, self.local_bridge_fields(o1, o2))
        self.dial("DialBegin", None, o1, [("DialString", f"{p.callee}@outbound")])
        authorized, max_usage, reason, priority = None, None, "", 3
        if p.authorize:
            authorized, max_usage, reason = await self.authorize()
            priority = 9 if max_usage else 10
            if not authorized:
                return await self.end_before_dial(21, authorized, reason)
        else:
            self.exten(o2, "NoOp", f"outbound {p.caller} -> {p.callee} acct={p.account}", 1)
            self.exten(o2, "Set", "DIAL_TO=30", 2)
            self.varset(o2, "DIAL_TO", "30")
        if self.call.cut.is_set():
            return await self.end_before_dial(self.call.cut_cause, authorized, reason, max_usage)
        self.result = (authorized, max_usage, reason)
        self.dial_priority = priority
        limit = f",L({max_usage * 1000})" if max_usage else ""
        self.dial_data = f"Local/{p.callee}@carrier/n,30{limit}"
        self.exten(o2, "Dial", self.dial_data, priority)
        for variable in ("DIALSTATUS", "DIALEDPEERNUMBER", "ANSWEREDTIME", "RINGTIME"):
            self.varset(o2, variable, "")
        status = await self.dial_carrier()
        if status != "ANSWER":
            return await self.end_unanswered(status)
        limited = max_usage is not None and 0 < max_usage < p.talk_seconds
        talk = float(max_usage) if limited and max_usage else p.talk_seconds
        remaining = self.answer_mono + talk - asyncio.get_running_loop().time()
        if await self.call.wait(remaining):
            return self.outcome(self.end_by_ami(), "ANSWER", cut=True)
        return self.outcome(self.end_answered(), "ANSWER", limited=limited)

    async def authorize(self) -> tuple[bool, int | None, str]:
        p, o2, sim = self.plan, self.o2, self.sim
        self.exten(o2, "NoOp", f"authorize {p.callee} for {p.caller} acct={p.account}", 1)
        for priority, variable in ((2, "AUTH_RESULT"), (3, "AUTH_MAXSECS")):
            self.exten(o2, "Set", f"{variable}=", priority)
            self.varset(o2, variable, "")
        url = f"agi://{sim.fastagi_host}:{sim.fastagi_port}/authorize"
        self.exten(o2, "AGI", f"{url},{p.callee},{p.caller},{p.account}", 4)
        env = asterisk_env(
            url=url,
            channel=o2,
            thread_id=sim.rng.randrange(10**14, 10**15),
            args=(p.callee, p.caller, p.account),
            priority=4,
        )
        result = await run_fastagi(
            sim.fastagi_host,
            sim.fastagi_port,
            env,
            on_command=self.agi_command,
            timeout=sim.agi_timeout,
        )
        auth = result.variables.get("AUTH_RESULT", "")
        maxsecs_text = result.variables.get("AUTH_MAXSECS", "").strip()
        self.varset(o2, "AGISTATUS", result.status)
        self.auth_note = f"AGISTATUS={result.status} AUTH_RESULT={auth}"
        self.exten(o2, "NoOp", f"{self.auth_note} AUTH_MAXSECS={maxsecs_text}", 5)
        allowed = result.status == "SUCCESS" and auth == "ALLOW"
        max_usage = int(maxsecs_text) if maxsecs_text.isdigit() else None
        reason = result.variables.get("AUTH_REASON", "") or ("OK" if allowed else "")
        if result.status != "SUCCESS":
            reason = reason or "AGI_FAILURE"
        self.exten(o2, "GotoIf", f"{int(result.status != 'SUCCESS')}?denied,1", 6)
        if result.status == "SUCCESS":
            self.exten(o2, "GotoIf", f"{int(not allowed)}?denied,1", 7)
        if allowed:
            self.exten(o2, "GotoIf", f"{int(not max_usage)}?nolimit", 8)
        return allowed, max_usage, reason

    def agi_command(self, command: str, assignment: tuple[str, str] | None) -> None:
        head = [("CommandId", str(self.sim.rng.randrange(10**8, 2**31))), ("Command", command)]
        self.ev("AGIExecStart", self.o2, head, "agi,all")
        if assignment is not None:
            self.varset(self.o2, *assignment)
        tail = [("ResultCode", "200"), ("Result", "Success")]
        self.ev("AGIExecEnd", self.o2, [*head, *tail], "agi,all")

    async def dial_carrier(self) -> str:
        """Create the B leg, ring it; returns the DialStatus (ANSWER, BUSY, ...)."""
        p, o1, o2 = self.plan, self.o1, self.o2
        self.c1, self.c2 = c1, c2 = self.local_pair("carrier")
        self.varset(c1, "DIALEDPEERNUMBER", f"{p.callee}@carrier/n")
        self.exten(c1, "AppDial", "(Outgoing Line)")
        self.identify(c1, p.callee, p.caller, "cid")
        self.identify(c2, p.caller, p.callee, "cid")
        self.ev("LocalBridge", None, self.local_bridge_fields(c1, c2))
        self.dial("DialBegin", o2, c1, [("DialString", f"{p.callee}@carrier/n")])
        self.exten(c2, "NoOp", f"carrier: {p.outcome}", 1)
        if p.outcome in ("answer", "noanswer"):
            self.exten(c2, "Ringing", "", 2)
            self.newstate(c1, 5)
            self.exten(c2, "Wait", f"{p.ring_seconds:g}", 3)
            self.newstate(o1, 5)
            self.dial("DialState", o2, c1, [("DialStatus", "RINGING")])
            self.dial("DialState", None, o1, [("DialStatus", "RINGING")])
        if await self.call.wait(p.ring_seconds):
            return "CANCEL"
        if p.outcome in ("busy", "congestion"):
            self.exten(c2, p.outcome.capitalize(), "10", 2)
            self.newstate(c2, 7)
            return p.outcome.upper()
        if p.outcome == "noanswer":
            return "NOANSWER"
        self.exten(c2, "Answer", "", 4)
        self.newstate(c2, 6)
        self.newstate(c1, 6)
        self.varset(o2, "DIALSTATUS", "ANSWER")
        self.answer_ts = self.dial("DialEnd", o2, c1, [("DialStatus", "ANSWER")])
        self.answer_time = float(self.answer_ts)
        self.answer_mono = asyncio.get_running_loop().time()
        self.newstate(o1, 6)
        self.newstate(o2, 6)
        o1.application, o1.app_data = "Wait", "120"
        bridge_id = str(uuid.UUID(int=self.sim.rng.getrandbits(128), version=4))
        self.bridge("BridgeCreate", bridge_id, 0)
        self.dial("DialEnd", None, o1, [("DialStatus", "ANSWER")])
        for count, ch in enumerate((c1, o2), start=1):
            ch.bridge_id = bridge_id
            self.bridge("BridgeEnter", bridge_id, count, ch)
        for ch, peer in ((c1, o2), (o2, c1)):
            self.varset(ch, "BRIDGEPEER", peer.name)
        self.exten(c2, "Wait", "120", 5)
        return "ANSWER"

    def end_answered(self) -> str:
        """The far end or the Dial L() limit ends the call (fastagi trace order)."""
        o1, o2, c1, c2 = self.o1, self.o2, self.c1, self.c2
        self.varset(c1, "BRIDGEPEER", "")
        self.varset(o2, "BRIDGEPEER", "")
        self.bridge("BridgeLeave", c1.bridge_id, 1, c1)
        self.bridge("BridgeLeave", c1.bridge_id, 0, o2)
        self.hangup_request(c2, 16)
        self.hangup(c1, 16)
        self.hangup_request(c2, 16, soft=True)
        self.varset(o2, "DIALSTATUS", "ANSWER")
        self.bridge("BridgeDestroy", c1.bridge_id, 0)
        self.cdr(c2, "", "Wait", "120", "ANSWERED")
        self.hangup_request(o2, 16, soft=True)
        self.cdr(o2, c1.name, "Dial", self.dial_data, "ANSWERED")
        self.varset(o1, "CHANLOCALSTATUS", "ANSWER")
        self.hangup_request(o1, 16)
        self.hangup(c2, 16)
        self.cdr(o1, "", "Wait", "120", "ANSWERED")
        self.hangup(o1, 16)
        return self.hangup(o2, 16)

    def end_by_ami(self) -> str:
        """An AMI Hangup cut the call (ami_hangup_cutoff trace order)."""
        o1, o2, c1, c2 = self.o1, self.o2, self.c1, self.c2
        cause = {self.call.cut_channel: self.call.cut_cause}
        self.varset(o2, "BRIDGEPEER", "")
        self.varset(c1, "BRIDGEPEER", "")
        self.cdr(o2, c1.name, "Dial", self.dial_data, "ANSWERED")
        self.bridge("BridgeLeave", c1.bridge_id, 1, o2)
        self.varset(o2, "DIALSTATUS", "ANSWER")
        self.hangup_request(o2, 16, soft=True)
        self.varset(o1, "CHANLOCALSTATUS", "ANSWER")
        self.hangup_request(o1, 16)
        end = self.hangup(o2, cause.get(o2.name, 16))
        self.hangup(o1, cause.get(o1.name, 16))
        self.bridge("BridgeLeave", c1.bridge_id, 0, c1)
        self.bridge("BridgeDestroy", c1.bridge_id, 0)
        self.hangup_request(c2, 16)
        self.hangup(c1, cause.get(c1.name, 16))
        self.cdr(o1, "", "Wait", "120", "ANSWERED")
        self.cdr(c2, "", "Wait", "120", "ANSWERED")
        self.hangup_request(c2, 16, soft=True)
        self.hangup(c2, cause.get(c2.name, 16))
        return end

    async def end_unanswered(self, status: str) -> CallOutcome:
        """BUSY, CONGESTION, NOANSWER, or CANCEL (AMI Hangup while ringing)."""
        o1, o2, c1, c2 = self.o1, self.o2, self.c1, self.c2
        far_cause = {"BUSY": 17, "CONGESTION": 34}.get(status, 0)
        app = {"BUSY": "Busy", "CONGESTION": "Congestion"}.get(status, "Wait")
        self.dial("DialEnd", o2, c1, [("DialStatus", status)])
        far_data = "10" if far_cause else f"{self.plan.ring_seconds:g}"
        self.cdr(c2, "", app, far_data, _DISPOSITION.get(status, status) if far_cause else "FAILED")
        self.hangup_request(c2, 0)
        self.hangup_request(c2, 16, soft=True)
        self.hangup(c2, far_cause)
        self.hangup(c1, 0)
        self.varset(o2, "DIALSTATUS", status)
        if status != "CANCEL":
            self.exten(
                o2,
                "NoOp",
                f"DIALSTATUS={status} HANGUPCAUSE=0 ANSWEREDTIME=",
                self.dial_priority + 1,
            )
            self.exten(o2, "Hangup", "", self.dial_priority + 2)
        self.hangup_request(o2, 16, soft=True)
        self.varset(o1, "CHANLOCALSTATUS", status)
        self.hangup_request(o1, 16)
        self.hangup(o2, self.call.cut_cause if status == "CANCEL" else 16)
        self.dial("DialEnd", None, o1, [("DialStatus", "NOANSWER")])
        self.cdr(o2, c1.name, "Dial", self.dial_data, _DISPOSITION.get(status, status))
        if status != "CANCEL":
            self.cdr(o2, "", "Hangup", "", "NO ANSWER")
        self.cdr(o1, "", "AppDial2", "(Outgoing Line)", "NO ANSWER")
        self.hangup(o1, 16)
        return self.outcome(None, status, cut=status == "CANCEL")

    async def end_before_dial(
        self, cause: int, authorized: bool | None, reason: str, max_usage: int | None = None
    ) -> CallOutcome:
        """Denied (``Hangup(21)``) or cut by AMI before Dial."""
        o1, o2 = self.o1, self.o2
        self.result = (authorized, max_usage, reason)
        if cause == 21:
            o2.exten = "denied"
            self.exten(o2, "NoOp", f"call denied: {self.auth_note}", 1)
            self.exten(o2, "Hangup", "21", 2)
        self.hangup_request(o2, 16, soft=True)
        self.hangup_request(o1, cause)
        self.cdr(o2, "", "Hangup" if cause == 21 else o2.application, o2.app_data, "NO ANSWER")
        self.hangup(o2, cause)
        self.dial("DialEnd", None, o1, [("DialStatus", "NOANSWER")])
        self.cdr(o1, "", "AppDial2", "(Outgoing Line)", "NO ANSWER")
        self.hangup(o1, cause)
        return self.outcome(None, "", cut=self.call.cut.is_set())

    def outcome(
        self, end_ts: str | None, status: str, *, cut: bool = False, limited: bool = False
    ) -> CallOutcome:
        authorized, max_usage, reason = self.result
        billsec = Decimal(end_ts) - Decimal(self.answer_ts) if end_ts and self.answer_ts else None
        return CallOutcome(
            linkedid=self.o1.linkedid,
            a_leg_uniqueid=self.o2.uniqueid,
            authorized=authorized,
            reason=reason,
            max_usage=max_usage,
            answered=billsec is not None,
            cut_by_daemon=cut,
            limited_by_switch=limited and not cut,
            billsec=billsec if billsec is not None else Decimal("0.000000"),
            dial_status=status,
            a_leg_channel=self.o2.name,
        )
