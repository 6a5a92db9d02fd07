"""The Lua scripts of the live state: loaded once from package data, run by EVALSHA.

One ``.lua`` file per atomic operation lives in ``balance/lua`` (alisaifee/limits style).
Each script's SHA1 is computed locally, so a script is sent by EVALSHA first; a server
that answers NOSCRIPT (fresh, restarted or flushed) gets ``SCRIPT LOAD`` and the call is
retried once. Redis errors are not translated here: ``balance.live`` wraps them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

SCRIPT_NAMES = (
    "reserve",
    "extend",
    "settle",
    "release",
    "credit",
    "load",
    "snapshot",
    "has_call",
    "reserved",
)

Arg = str | int | bytes
"""A script key or argument: strings, integers or pre-encoded bytes (never floats)."""


@dataclass(frozen=True, slots=True)
class LuaScript:
    """One atomic operation: its name, Lua source and SHA1 (as Redis computes it)."""

    name: str
    source: str
    sha: str


INCLUDE = "--@include "
"""A line ``--@include NAME`` makes script NAME a local function ``NAME(KEYS, ARGV)``
of the including script (its top-level ``return`` returns from that function)."""


def load_script(name: str) -> LuaScript:
    """Read ``balance/lua/<name>.lua`` from the installed package, includes expanded."""
    source = expand_includes(name, _read_packaged)
    return LuaScript(name=name, source=source, sha=hashlib.sha1(source.encode()).hexdigest())


def expand_includes(name: str, read: Callable[[str], str], including: tuple[str, ...] = ()) -> str:
    """Script ``name``'s source (``read(name)``) with every ``--@include`` line expanded.

    An include cycle or an include line that does not name a script is a ``ValueError``
    naming the script and the line.
    """
    if name in including:
        chain = " -> ".join((*including, name))
        raise ValueError(f"lua script {name!r} includes itself: {chain}")
    text = read(name)
    if INCLUDE not in text:
        return text
    lines = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.startswith(INCLUDE):
            part = line[len(INCLUDE) :].strip()
            if not part.isidentifier():
                raise ValueError(f"lua script {name!r} line {number}: bad include {line.strip()!r}")
            body = expand_includes(part, read, (*including, name))
            lines.append(f"local function {part}(KEYS, ARGV)\n{body.rstrip()}\nend\n")
        else:
            lines.append(line)
    return "".join(lines)


def _read_packaged(name: str) -> str:
    return resources.files("balance").joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_library() -> Mapping[str, LuaScript]:
    """Every script of the live state, by name."""
    return {name: load_script(name) for name in SCRIPT_NAMES}


class ScriptRunner(Protocol):
    """Runs one script call and returns its raw reply (or raises the Redis error)."""

    async def run(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA ``script`` with ``keys`` and ``args``; load it on NOSCRIPT."""
        ...

    async def aclose(self) -> None:
        """Wait for work in flight (a no-op for unbatched runners)."""
        ...


class DirectRunner:
    """One round trip per call: EVALSHA, with a SCRIPT LOAD fallback on NOSCRIPT."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def run(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA ``script``; on NOSCRIPT load it and retry once."""
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(script.source)
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Nothing is kept in flight."""
