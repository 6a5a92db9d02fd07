"""``GET|POST /v1/authorize/agent``: may this agent take a seat? (asked before login).

The switch (or the agent desktop) asks before an agent logs in; an allowed seat is held
for ``seats.hold_ttl`` seconds for its login, so N agents asking at once for K free
seats get exactly K yes (``daemon.seat_manager``). Parameters (query, form or JSON):
``account`` (the tenant; ``tenant`` is accepted too) and ``agent`` (the seat id, e.g.
Asterisk ``Agent:1001`` or ``PJSIP/1002``, FreeSWITCH ``1001@default``). The answer is
JSON ``{"allowed": true, "reason": "OK"}``, or with ``format=text`` (or
``Accept: text/plain``, for dialplan ``CURL()``) the lines ``result=ALLOW|DENY`` and
``reason=<code>``. A missing parameter is a 400 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

AGENT_PATH = "/v1/authorize/agent"

AgentAuthorizer = Callable[[str, str], Awaitable[tuple[bool, str]]]
"""(tenant, seat) -> (allowed, reason code): ``SeatManager.authorize_agent``."""


class BadAgentRequest(ValueError):
    """A parameter is missing or malformed (names it)."""


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.method == "POST":
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if body and kind == "application/json":
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadAgentRequest("body: not valid JSON") from exc
            if not isinstance(data, dict):
                raise BadAgentRequest("body: JSON body must be an object")
            params.update({str(k): str(v) for k, v in data.items() if v is not None})
        elif body:
            try:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError as exc:
                raise BadAgentRequest("body: not UTF-8") from exc
    return params


def agent_routes(authorize_agent: AgentAuthorizer) -> list[Route]:
    """The route of the pre-login seat check."""

    async def endpoint(request: Request) -> Response:
        text = request.query_params.get("format") == "text" or (
            "text/plain" in request.headers.get("accept", "")
            and "application/json" not in request.headers.get("accept", "")
        )
        try:
            params = await _params(request)
            tenant = params.get("account") or params.get("tenant") or ""
            agent = params.get("agent", "")
            for name, value in (("account", tenant), ("agent", agent)):
                if not value:
                    raise BadAgentRequest(f"{name}: missing")
                if len(value) > 256 or any(ch.isspace() for ch in value):
                    raise BadAgentRequest(f"{name}: at most 256 characters without spaces")
        except BadAgentRequest as exc:
            if text:
                return PlainTextResponse(f"result=DENY\nreason=BAD_REQUEST\nerror={exc}\n", 400)
            return JSONResponse({"allowed": False, "reason": "BAD_REQUEST", "error": str(exc)}, 400)
        allowed, reason = await authorize_agent(tenant, agent)
        if text:
            return PlainTextResponse(f"result={'ALLOW' if allowed else 'DENY'}\nreason={reason}\n")
        return JSONResponse({"allowed": allowed, "reason": reason, "agent": agent})

    return [Route(AGENT_PATH, endpoint, methods=["GET", "POST"])]
