"""ESL park authorization: a call parked in a configured context is authorized over ESL.

The dialplan parks the unanswered leg (``park`` in e.g. context ``authhold``); FreeSWITCH
emits CHANNEL_PARK with the leg's headers. The daemon authorizes it through the one
authorization service (same request as a mod_xml_curl lookup: account, caller, callee,
call reference = the billing leg's uuid) and then, for an allowed call, sets the switch
side limit (``execute_on_answer`` = ``sched_hangup +<max_usage>``, counted from the answer,
so the call is bounded even if the daemon dies)
and continues it with ``uuid_transfer <uuid> <callee> XML <continue_context>``; for a
denied call it records the reason in ``rk_auth_reason`` and kills the leg with the
reason's hangup cause (``uuid_kill <uuid> <CAUSE>``).

Only the *hold* is authorized: a CHANNEL_PARK whose ``Answer-State`` is not ``answered``
(an answered ``&park()`` A-leg parks too, in every scenario) in one of the contexts, once
per channel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import structlog

from connectors.esl.errors import ESLError
from connectors.esl.parser import ESLEvent
from daemon.authorization import AuthorizationDecision, Authorizer, Reason
from daemon.freeswitch_dialplan import BadDialplanRequest, dialplan_request, hangup_cause

log = structlog.get_logger(__name__)


class ParkControl(Protocol):
    """The ESL commands park authorization sends."""

    async def api(self, command: str) -> str:
        """One ``api`` command; raises on ``-ERR``."""
        ...

    async def uuid_kill(self, uuid: str, cause: str = "NORMAL_CLEARING") -> str:
        """Kill a channel with a cause."""
        ...

    async def uuid_transfer(
        self, uuid: str, dest: str, dialplan: str = "XML", context: str = "default"
    ) -> str:
        """Transfer a channel."""
        ...


class ParkAuthorizer:
    """Authorizes parked calls of one FreeSWITCH and continues or kills them."""

    def __init__(
        self,
        switch_id: str,
        authorizer: Authorizer,
        control: ParkControl,
        *,
        contexts: Sequence[str],
        continue_context: str,
        remember: int = 10_000,
    ) -> None:
        self._switch_id = switch_id
        self._authorizer = authorizer
        self._control = control
        self._contexts = frozenset(contexts)
        self._continue_context = continue_context
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()

    def wants(self, event: ESLEvent) -> bool:
        """True for an authorization hold this authorizer has not handled yet."""
        if not self._contexts or event.name != "CHANNEL_PARK":
            return False
        if event.get("Answer-State", "") == "answered":
            return False
        if event.get("Caller-Context", "") not in self._contexts:
            return False
        uuid = event.unique_id
        return bool(uuid) and uuid not in self._seen

    async def handle(self, event: ESLEvent) -> AuthorizationDecision:
        """Authorize one parked leg and continue or kill it; returns the decision."""
        uuid = event.unique_id
        self._seen[uuid] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        request = dialplan_request(event, self._switch_id)
        with structlog.contextvars.bound_contextvars(call_id=uuid):
            if isinstance(request, BadDialplanRequest):
                log.warning("park: bad request", field=request.field, error=request.message)
                decision = AuthorizationDecision.deny(Reason.BAD_REQUEST)
            else:
                decision = await self._authorizer.authorize(request)
            try:
                if decision.allowed and not isinstance(request, BadDialplanRequest):
                    await self._control.api(
                        f"uuid_setvar {uuid} execute_on_answer "
                        f"sched_hangup +{decision.max_usage} ALLOTTED_TIMEOUT"
                    )
                    await self._control.api(f"uuid_setvar {uuid} rk_auth_result ALLOW")
                    await self._control.api(
                        f"uuid_setvar {uuid} rk_max_duration {decision.max_usage}"
                    )
                    await self._control.uuid_transfer(
                        uuid, request.callee, "XML", self._continue_context
                    )
                else:
                    await self._control.api(f"uuid_setvar {uuid} rk_auth_result DENY")
                    await self._control.api(
                        f"uuid_setvar {uuid} rk_auth_reason {decision.reason.value}"
                    )
                    await self._control.uuid_kill(uuid, hangup_cause(decision.reason))
            except (ESLError, ValueError) as exc:
                log.error("park: cannot continue the call", error=str(exc))
                return decision
            log.info(
                "park authorization",
                allowed=decision.allowed,
                reason=decision.reason.value,
                max_usage=decision.max_usage,
            )
        return decision
