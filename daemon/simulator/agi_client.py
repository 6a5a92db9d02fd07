"""The simulator's FastAGI client: what Asterisk's ``AGI(agi://host:port/script,...)`` does.

Connects to a FastAGI server, sends the ``agi_*`` environment block (``key: value\\n``
lines and a blank line), then answers every command line the server sends with
``200 result=1`` until the server closes the connection. ``SET VARIABLE NAME VALUE``
commands set channel variables, which the dialplan reads afterwards (``AUTH_RESULT``,
``AUTH_REASON``, ``AUTH_MAXSECS``, ``AUTH_ROUTES``).

Like Asterisk, a server that cannot be reached or breaks the session does not raise:
the result's ``status`` is ``FAILURE`` (Asterisk's ``AGISTATUS``); a normal close by the
server is ``SUCCESS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from daemon.simulator.ami_server import AmiChannel

_log = structlog.get_logger(__name__)

CommandHook = Callable[[str, tuple[str, str] | None], None]
"""Called for every command received: its text and the variable it sets, if any."""


@dataclass(frozen=True, slots=True)
class AgiResult:
    """The outcome of one FastAGI session."""

    status: str  # AGISTATUS: SUCCESS or FAILURE
    variables: dict[str, str] = field(default_factory=dict)
    commands: tuple[str, ...] = ()
    error: str = ""


def asterisk_env(
    *, url: str, channel: AmiChannel, thread_id: int, args: Sequence[str], priority: int
) -> list[tuple[str, str]]:
    """The ``agi_*`` block Asterisk 22 sends for ``AGI(<url>,<args>)`` on ``channel``."""
    script = url.rsplit("/", 1)[-1]
    return [
        ("agi_network", "yes"),
        ("agi_network_script", script),
        ("agi_request", url),
        ("agi_channel", channel.name),
        ("agi_language", "en"),
        ("agi_type", channel.name.split("/", 1)[0]),
        ("agi_uniqueid", channel.uniqueid),
        ("agi_version", "22.10.1"),
        ("agi_callerid", channel.caller_num),
        ("agi_calleridname", channel.caller_name),
        *[(f"agi_calling{k}", "0") for k in ("pres", "ani2", "ton", "tns")],
        ("agi_dnid", "unknown"),
        ("agi_rdnis", "unknown"),
        ("agi_context", channel.context),
        ("agi_extension", channel.exten),
        ("agi_priority", str(priority)),
        ("agi_enhanced", "0.0"),
        ("agi_accountcode", channel.accountcode),
        ("agi_threadid", str(thread_id)),
        *[(f"agi_arg_{n}", arg) for n, arg in enumerate(args, start=1)],
    ]


def parse_set_variable(command: str) -> tuple[str, str] | None:
    """``SET VARIABLE NAME VALUE`` (value optionally quoted) -> (NAME, VALUE), else None."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if len(words) < 3 or words[0].upper() != "SET" or words[1].upper() != "VARIABLE":
        return None
    return words[2], " ".join(words[3:])


async def run_fastagi(
    host: str,
    port: int,
    env: Sequence[tuple[str, str]],
    *,
    on_command: CommandHook | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - a session bound, like Asterisk's AGI
) -> AgiResult:
    """Run one FastAGI session against ``host:port``; never raises for network errors."""
    variables: dict[str, str] = {}
    commands: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                block = "".join(f"{key}: {value}\n" for key, value in env) + "\n"
                writer.write(block.encode())
                await writer.drain()
                await _command_loop(reader, writer, variables, commands, on_command)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError) as exc:
        _log.warning("fastagi session failed", host=host, port=port, error=repr(exc))
        return AgiResult("FAILURE", variables, tuple(commands), error=repr(exc))
    return AgiResult("SUCCESS", variables, tuple(commands))


async def _command_loop(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    variables: dict[str, str],
    commands: list[str],
    on_command: CommandHook | None,
) -> None:
    """Answer commands until the server closes (a reset counts as a close, like Asterisk)."""
    with contextlib.suppress(ConnectionError):
        while raw := await reader.readline():
            command = raw.decode("utf-8", errors="replace").strip()
            if not command:
                continue
            commands.append(command)
            assignment = parse_set_variable(command)
            if assignment is not None:
                variables[assignment[0]] = assignment[1]
            if on_command is not None:
                on_command(command, assignment)
            writer.write(b"200 result=1\n")
            await writer.drain()
