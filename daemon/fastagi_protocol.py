"""FastAGI wire format: the pure part (text in, values out, no I/O).

Asterisk's ``AGI(agi://host:port/script?query,arg1,arg2,...)`` connects, sends one
``agi_name: value`` line per channel fact, then a blank line; the script then sends
commands, one line each, and reads one reply per command (``200 result=1``). When the
channel hangs up, Asterisk sends a lone ``HANGUP`` line. Commands are parsed by
Asterisk's ``parse_args`` (res_agi.c): words split on blanks, ``"..."`` groups, a
backslash escapes the next character; so every value is sent double-quoted with ``"``
and ``\\`` escaped.

An answer is written as ONE block of commands followed by end-of-file (``answer_block``
+ a TCP half-close), and the replies are read afterwards, in order. Asterisk executes
the commands one by one in the order received (``run_agi``: ``fgets`` one line, run it,
reply). It reads through a stdio buffer but waits for the socket to be readable before
each ``fgets``: commands already buffered would wait for more data, and the half-close
is that data (EOF keeps the socket readable), so every command runs and the AGI then ends
as when the script closes. One round trip per call instead of one per variable.

Errors::

    FastAGIError                   code
    +-- FastAGIProtocolError       BAD_HEADER     not AGI: no colon, too long, too many lines
    +-- FastAGIBadRequest          BAD_REQUEST    valid AGI, but not an authorization we serve
    +-- FastAGISessionEnded        SESSION_ENDED  HANGUP line, 5xx reply or EOF: end quietly
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from daemon.authorization import AuthorizationDecision, AuthorizationRequest, Reason

AUTHORIZE_SCRIPT = "authorize"
MAX_HEADER_LINES = 128
MAX_FIELD_LENGTH = 256


class FastAGIError(Exception):
    """Base of every FastAGI error; ``code`` is stable."""

    code = "FASTAGI_ERROR"


class FastAGIProtocolError(FastAGIError):
    """The peer does not speak AGI (names the offending line)."""

    code = "BAD_HEADER"


class FastAGIBadRequest(FastAGIError):
    """A well-formed AGI request that is not a valid authorization (names the field)."""

    code = "BAD_REQUEST"


class FastAGISessionEnded(FastAGIError):
    """Asterisk ended the dialogue (HANGUP, 5xx reply, EOF): not an error to report."""

    code = "SESSION_ENDED"


@dataclass(frozen=True, slots=True)
class AGIEnvironment:
    """The ``agi_*`` header block of one FastAGI session, keys without the prefix."""

    values: Mapping[str, str]

    def get(self, name: str) -> str:
        """The value of ``agi_<name>`` (empty when absent)."""
        return self.values.get(name, "")

    @property
    def script(self) -> str:
        """The script path of ``agi://host/PATH?query``, without slashes around it."""
        return urlsplit(self.get("network_script")).path.strip("/")

    @property
    def query(self) -> dict[str, str]:
        """The query parameters of the script (``authorize?switch=pbx1``)."""
        return dict(parse_qsl(urlsplit(self.get("network_script")).query))

    @property
    def args(self) -> tuple[str, ...]:
        """``agi_arg_1..n`` in order (stops at the first missing number)."""
        found: list[str] = []
        while (key := f"arg_{len(found) + 1}") in self.values:
            found.append(self.values[key])
        return tuple(found)


def parse_header_line(line: str, lineno: int) -> tuple[str, str]:
    """Split one ``agi_name: value`` line; ``lineno`` (1-based) names the culprit."""
    name, sep, value = line.partition(":")
    name = name.strip()
    if not sep or not name.startswith("agi_") or len(name) > 64:
        raise FastAGIProtocolError(f"line {lineno}: not an agi_* header: {line[:80]!r}")
    return name.removeprefix("agi_"), value.strip()


def parse_environment(lines: list[str]) -> AGIEnvironment:
    """Parse the header lines (without the terminating blank line)."""
    if len(lines) > MAX_HEADER_LINES:
        raise FastAGIProtocolError(f"more than {MAX_HEADER_LINES} header lines")
    values: dict[str, str] = {}
    for lineno, line in enumerate(lines, start=1):
        name, value = parse_header_line(line, lineno)
        values[name] = value
    return AGIEnvironment(values)


def _field(env: AGIEnvironment, arg_number: int, fallback: str) -> str:
    value = env.get(f"arg_{arg_number}")
    if not value:
        value = env.get(fallback)
    if value == "unknown":  # Asterisk's placeholder for an absent caller id / dnid
        value = ""
    return value


def _checked(name: str, value: str, *, required: bool) -> str:
    if required and not value:
        raise FastAGIBadRequest(f"{name}: missing")
    if len(value) > MAX_FIELD_LENGTH:
        raise FastAGIBadRequest(f"{name}: longer than {MAX_FIELD_LENGTH} characters")
    return value


def to_authorization_request(env: AGIEnvironment, *, switch_id: str) -> AuthorizationRequest:
    """Turn an ``authorize`` session into the authorization question.

    Arguments: ``agi_arg_1`` callee, ``agi_arg_2`` caller, ``agi_arg_3`` accountcode,
    each falling back to ``agi_extension`` / ``agi_callerid`` / ``agi_accountcode``.
    """
    if env.script != AUTHORIZE_SCRIPT:
        raise FastAGIBadRequest(f"network_script: unknown script {env.script!r}")
    switch = env.query.get("switch") or switch_id
    return AuthorizationRequest(
        switch_id=_checked("switch", switch, required=True),
        call_id=_checked("uniqueid", env.get("uniqueid"), required=True),
        account=_checked("accountcode", _field(env, 3, "accountcode"), required=True),
        caller=_checked("caller", _field(env, 2, "callerid"), required=False),
        callee=_checked("callee", _field(env, 1, "extension"), required=True),
    )


AGENT_SCRIPT = "authorize_agent"
"""``AGI(agi://host:4573/authorize_agent,AGENT[,ACCOUNT])``: the pre-login seat check."""


def to_agent_request(env: AGIEnvironment) -> tuple[str, str]:
    """(tenant, seat) of an ``authorize_agent`` session.

    ``agi_arg_1`` the seat id (e.g. ``Agent:1001``, ``PJSIP/1002``), ``agi_arg_2`` the
    tenant, falling back to the channel's ``agi_accountcode``.
    """
    agent = _checked("agent", env.get("arg_1"), required=True)
    tenant = _checked("accountcode", _field(env, 2, "accountcode"), required=True)
    if any(ch.isspace() for ch in agent):
        raise FastAGIBadRequest(f"agent: no spaces allowed, got {agent!r}")
    return tenant, agent


def agent_variables(allowed: bool, reason: str) -> list[tuple[str, str]]:
    """The channel variables of a seat answer; ``AGENT_AUTH_RESULT`` last (fail closed)."""
    return [("AGENT_AUTH_REASON", reason), ("AGENT_AUTH_RESULT", "ALLOW" if allowed else "DENY")]


def decision_variables(decision: AuthorizationDecision) -> list[tuple[str, str]]:
    """The channel variables of an answer, in the order they are sent.

    ``AUTH_RESULT`` comes last: if the session breaks half-way, the dialplan never sees
    ``ALLOW`` without the limits that go with it (fail closed).
    """
    allowed = decision.allowed
    routes = decision.routes if allowed else ()
    variables = [
        ("AUTH_REASON", str(decision.reason)),
        ("AUTH_MAXSECS", str(decision.max_usage) if allowed else ""),
        ("AUTH_MAXMS", str(decision.max_usage_ms) if allowed else ""),
        ("AUTH_ROUTES", "&".join(route.dial_string for route in routes)),
        ("AUTH_ROUTE_COUNT", str(len(routes))),
    ]
    variables.extend((f"AUTH_ROUTE_{n}", r.dial_string) for n, r in enumerate(routes, start=1))
    variables.append(("AUTH_RESULT", "ALLOW" if allowed else "DENY"))
    return variables


def deny_variables(reason: Reason) -> list[tuple[str, str]]:
    """The variables of a denial with ``reason``."""
    return decision_variables(AuthorizationDecision.deny(reason))


def quote(value: str) -> str:
    """Quote one command argument for Asterisk's ``parse_args``."""
    cleaned = value.replace("\r", " ").replace("\n", " ")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_variable_command(name: str, value: str) -> bytes:
    """The ``SET VARIABLE`` command line for one variable."""
    return f"SET VARIABLE {name} {quote(value)}\n".encode()


def answer_block(variables: list[tuple[str, str]]) -> bytes:
    """Every ``SET VARIABLE`` command of an answer, in order, as one write."""
    return b"".join(set_variable_command(name, value) for name, value in variables)


@dataclass(frozen=True, slots=True)
class AGIReply:
    """One reply line of Asterisk: ``200 result=1 (data)``."""

    code: int
    result: str
    text: str


def parse_reply(line: str) -> AGIReply:
    """Parse one reply line; ``HANGUP`` and 5xx replies end the session."""
    stripped = line.strip()
    if stripped == "HANGUP":
        raise FastAGISessionEnded("channel hung up")
    head, _, rest = stripped.partition(" ")
    code_text = head.split("-", 1)[0]
    if not code_text.isdigit():
        raise FastAGIProtocolError(f"reply: not an AGI reply: {stripped[:80]!r}")
    code = int(code_text)
    if code >= 500:
        raise FastAGISessionEnded(f"reply {code}: {rest[:80]}")
    result = ""
    if rest.startswith("result="):
        result = rest.removeprefix("result=").split(" ", 1)[0]
    return AGIReply(code=code, result=result, text=rest)
