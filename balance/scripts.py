"""The Lua scripts of the live state: loaded once from package data, run by EVALSHA.

One ``.lua`` file per atomic operation lives in ``balance/lua`` (alisaifee/limits style).
Each script's SHA1 is computed locally, so a script is sent by EVALSHA first; a server
that answers NOSCRIPT (fresh, restarted or flushed) gets ``SCRIPT LOAD`` and the call is
retried once. Redis errors are not translated here: ``balance.live`` wraps them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
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


def load_script(name: str) -> LuaScript:
    """Read ``balance/lua/<name>.lua`` from the installed package."""
    source = resources.files("balance").joinpath("lua", f"{name}.lua").read_text("utf-8")
    return LuaScript(name=name, source=source, sha=hashlib.sha1(source.encode()).hexdigest())


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
