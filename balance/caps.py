"""Shared real-time caps: a reseller over all its customers, and trunks (carriers).

An account's own caps (concurrency, calls per second, trial window, status) are checked
by its ``reserve`` script (``balance.live``). A cap that spans tenants cannot live under
one tenant's hash tag, so every shared scope lives in the one ``{caps}`` slot
(``balance.keys``) and ONE script (``caps.lua``) admits a call on all its scopes at
once, or on none:

- *required* scopes (every reseller above the account that caps its customers) must all
  admit the call;
- *alternative* scopes are the trunks of the call's route list, in route order: the
  first trunk with room takes the call (the routes before it are at capacity and are
  dropped from the answer). No trunk with room: the first trunk's reason.

Concurrency is a set of slots (zset of call keys with an expiry: a call's slot outlives
the longest allowed call, so a lost settlement cannot hold it forever); calls per second
is a sliding one-second window of admissions. A slot is first a lease of ``slot_ttl``
seconds (like the account's reservation: an authorization that never becomes a call
gives its slot back by itself); an answered call's slots are held until the longest
call could end (``hold``). A call's slots are released at its end (``release``); a call
denied by a later check gives back its CPS admissions too.

On Redis Cluster the ``{caps}`` slot is one node's: shared caps do not scale out with
the tenants, which is the price of checking them atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from balance import keys
from balance.batching import BatchingRunner, bulk, evalsha_head, packed_evalsha, script_runner
from balance.live import InvalidLiveInput, script_failure
from balance.scripts import Arg, LuaScript, ScriptRunner, load_script

_MAX_SCOPES = 16


@dataclass(frozen=True, slots=True)
class CapScope:
    """One shared scope and its limits (None: no cap of that kind)."""

    name: str  # ``reseller:<account id>`` or ``trunk:<carrier id>``
    concurrency_limit: int | None = None
    cps_limit: int | None = None

    @property
    def capped(self) -> bool:
        """Whether the scope limits anything."""
        return self.concurrency_limit is not None or self.cps_limit is not None


@dataclass(frozen=True, slots=True)
class CapAdmission:
    """The answer of ``acquire``.

    ``scope`` names the scope that denied the call, or the alternative (trunk) that took
    it; ``taken`` is that alternative's index in the list given (None: none taken).
    """

    ok: bool
    reason: str  # OK, CONCURRENCY_LIMIT, CPS_LIMIT
    scope: str | None = None
    taken: int | None = None


class SharedCaps:
    """Admit and release calls on shared scopes, one script call each."""

    def __init__(
        self,
        redis: Redis,
        *,
        slot_ttl: int,
        call_ttl: int,
        batch: bool = True,
        runner: ScriptRunner | None = None,
    ) -> None:
        """``slot_ttl``: seconds an authorized call's slot lives until its answer;
        ``call_ttl``: seconds an answered call's slot lives at most (its longest length)."""
        for name, value in (("slot_ttl", slot_ttl), ("call_ttl", call_ttl)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidLiveInput(f"{name} must be a positive int of seconds: {value!r}")
        self._ttl_ms = slot_ttl * 1000
        self._call_ttl_ms = call_ttl * 1000
        self._acquire = load_script("caps")
        self._release = load_script("caps_release")
        self._hold = load_script("caps_hold")
        self._runner: ScriptRunner = runner or script_runner(redis, batch=batch)
        self._redis = redis
        # the scopes' part of a packed call, checked and built once (the hot path), by the
        # identity of its two scope sequences: the callers reuse theirs, and hashing
        # dataclasses per call costs more than the lookup (the sequences are kept to check
        # an id was not reused)
        self._packed: dict[
            tuple[int, int],
            tuple[Sequence[CapScope], Sequence[CapScope], list[CapScope], bytes, bytes],
        ] = {}
        self._acquire_head = evalsha_head(self._acquire)
        self._ttl_bulk = bulk(b"%d" % self._ttl_ms)

    async def acquire(
        self,
        call_key: str,
        required: Sequence[CapScope],
        alternatives: Sequence[CapScope] = (),
    ) -> CapAdmission:
        """Admit ``call_key`` on every required scope and on the first alternative with room.

        Idempotent: a call already admitted is admitted again, on the same scopes.
        """
        if isinstance(self._runner, BatchingRunner):  # the hot path: packed in one go
            scopes, keys_part, args_part = self.pack(call_key, required, alternatives)
            n = len(scopes)
            command = packed_evalsha(self._acquire_head, 1 + 2 * n, 4 + 2 * n, keys_part, args_part)
            reply = await self.run_packed(self._acquire, command)
        else:
            scopes, script_keys, args = self.arguments(call_key, required, alternatives)
            reply = await self.run(self._acquire, script_keys, args)
        return admission(reply, scopes, len(required))

    @property
    def runner(self) -> ScriptRunner:
        """The runner of the scripts (a ``BatchingRunner`` on the hot path)."""
        return self._runner

    def arguments(
        self, call_key: str, required: Sequence[CapScope], alternatives: Sequence[CapScope]
    ) -> tuple[list[CapScope], list[Arg], list[Arg]]:
        """The scopes in script order, and the ``caps`` script's keys and arguments."""
        scopes = _scopes(required, alternatives)
        script_keys: list[Arg] = [keys.cap_call_key(_call_key(call_key))]
        args: list[Arg] = [call_key, self._ttl_ms, len(required), len(alternatives)]
        for slots, cps, limit, cps_limit, _, _ in (_prepare(scope) for scope in scopes):
            script_keys += (slots, cps)
            args += (limit, cps_limit)
        return scopes, script_keys, args

    def pack(
        self, call_key: str, required: Sequence[CapScope], alternatives: Sequence[CapScope]
    ) -> tuple[Sequence[CapScope], bytes, bytes]:
        """The scopes in script order, and the ``caps`` script's keys and arguments in RESP
        (bulk strings: 1 + 2 per scope keys, 4 + 2 per scope arguments).

        The scopes' part is packed once per pair of scope sequences (by identity: the
        callers reuse theirs); only the call's own key and record are packed per call.
        """
        _call_key(call_key)
        found = self._packed.get((id(required), id(alternatives)))
        if found is None or found[0] is not required or found[1] is not alternatives:
            scopes = _scopes(required, alternatives)
            prepared = [_prepare(scope) for scope in scopes]
            scope_keys = b"".join([entry[4] for entry in prepared])
            scope_args = b"".join(
                [
                    self._ttl_bulk,
                    bulk(b"%d" % len(required)),
                    bulk(b"%d" % len(alternatives)),
                    *(entry[5] for entry in prepared),
                ]
            )
            found = (required, alternatives, scopes, scope_keys, scope_args)
            if len(self._packed) >= _PACKED_KEPT:
                self._packed.clear()
            self._packed[(id(required), id(alternatives))] = found
        record = bulk(keys.cap_call_key(call_key).encode())
        return found[2], record + found[3], bulk(call_key.encode()) + found[4]

    async def hold(self, call_key: str) -> int:
        """The call was answered: hold its slots until its longest possible end."""
        reply = await self.run(
            self._hold,
            [keys.cap_call_key(_name("call_key", call_key))],
            [call_key, self._call_ttl_ms],
        )
        return int(reply)

    async def release(self, call_key: str, *, refund: bool = False) -> int:
        """Give back the call's slots (and its CPS admissions with ``refund``); idempotent."""
        reply = await self.run(
            self._release,
            [keys.cap_call_key(_name("call_key", call_key))],
            [call_key, 1 if refund else 0],
        )
        return int(reply)

    async def live_calls(self, scope: str) -> int:
        """Calls holding a slot of ``scope`` now (expired slots not counted)."""
        seconds, micros = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return int(await self._redis.zcount(keys.cap_slots_key(scope), now_ms, "+inf"))

    async def aclose(self) -> None:
        """Wait for script calls in flight."""
        await self._runner.aclose()

    async def run_packed(self, script: LuaScript, command: bytes) -> Any:
        """Run one EVALSHA packed in RESP on the batching runner; Redis errors translated."""
        runner = self._runner
        assert isinstance(runner, BatchingRunner)
        try:
            return await runner.run_packed(script, command)
        except (RedisError, OSError) as exc:
            raise script_failure(exc, script.name) from exc

    async def run(self, script: LuaScript, script_keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run one script call; Redis errors translated (``LiveStateUnavailable``, ...)."""
        try:
            return await self._runner.run(script, script_keys, args)
        except (RedisError, OSError) as exc:
            raise script_failure(exc, script.name) from exc


_PACKED_KEPT = 100_000


def _scopes(required: Sequence[CapScope], alternatives: Sequence[CapScope]) -> list[CapScope]:
    scopes = [*required, *alternatives]
    if len(scopes) > _MAX_SCOPES:
        raise InvalidLiveInput(f"at most {_MAX_SCOPES} shared scopes per call: {len(scopes)}")
    return scopes


def _call_key(call_key: object) -> str:
    if not isinstance(call_key, str) or not call_key or len(call_key) > 256:
        raise InvalidLiveInput(f"call_key must be a non-empty str of at most 256: {call_key!r}")
    return call_key


def admission(reply: Sequence[Any], scopes: Sequence[CapScope], required: int) -> CapAdmission:
    """The ``caps`` script's reply ``{reason, scope index}`` read against its scopes."""
    reason, index = _text(reply[0]), int(reply[1])
    scope_name = scopes[index - 1].name if index > 0 else None
    if reason != "OK":
        return CapAdmission(False, reason, scope_name)
    taken = index - 1 - required if index > 0 else None
    return CapAdmission(True, "OK", scope_name, taken)


def _prepare(scope: CapScope) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
    """A scope's two keys and two limit arguments, checked and encoded once, and the same
    packed in RESP (keys, then limits) for the batched path."""
    name = _name("scope", scope.name)
    slots, cps = keys.cap_slots_key(name).encode(), keys.cap_cps_key(name).encode()
    limit = b"%d" % _limit(scope, scope.concurrency_limit)
    cps_limit = b"%d" % _limit(scope, scope.cps_limit)
    return slots, cps, limit, cps_limit, bulk(slots) + bulk(cps), bulk(limit) + bulk(cps_limit)


def _limit(scope: CapScope, value: int | None) -> int:
    if value is None:
        return keys.UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidLiveInput(f"a limit of scope {scope.name!r} must be an int >= 0: {value!r}")
    return value


def _name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidLiveInput(f"{field} must be a non-empty str of at most 256: {value!r}")
    if not keys.printable_word(value):
        raise InvalidLiveInput(f"{field} must not contain spaces or control characters: {value!r}")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
