"""Live agent seats per tenant in Redis: the seat cap, checked atomically.

A seat is one agent present on a switch (``connectors.events.AgentLoggedIn``). Each
tenant's live seats are one hash and its pending pre-login asks one zset of holds
(``balance.keys.seats_key`` / ``seat_holds_key``, both tagged with the tenant), and each
operation is ONE Lua script (``balance/lua/seat_*.lua``), so N parallel logins or asks
against a limit of K admit exactly K:

- :meth:`SeatState.hold` is the switch's ask before a login (``/v1/authorize/agent``,
  FastAGI): it keeps the seat for ``hold_ttl`` seconds if the tenant has room; the
  login that follows converts the hold and is always admitted.
- :meth:`SeatState.login` admits a login that happened (``OK``), recognises a seat
  already live (``ALREADY``, never counted twice), or refuses it at the limit
  (``SEAT_LIMIT``: the seat is not added; the caller logs it off).
- :meth:`SeatState.logout` drops a seat; :meth:`SeatState.load` rebuilds the live seats
  from the SQL seat sessions at start (``balance.seat_sessions``, the source of truth).

A limit is an int >= 0, or None (or -1) for no cap. Errors are those of ``balance.live``:
``InvalidLiveInput`` (a bad id, naming it), ``LiveStateUnavailable``, ``LiveScriptError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from balance import keys
from balance.live import InvalidLiveInput, LiveScriptError
from balance.scripts import Arg, ScriptRunner
from balance.usage import PlanScripts, check_count, check_id

SEAT_SCRIPTS = ("seat_hold", "seat_login", "seat_logout", "seat_list", "seat_load")

SeatReason = Literal["OK", "ALREADY", "SEAT_LIMIT"]
SEAT_OK: SeatReason = "OK"
SEAT_ALREADY: SeatReason = "ALREADY"
SEAT_LIMIT: SeatReason = "SEAT_LIMIT"
_REASONS: dict[str, SeatReason] = {r: r for r in (SEAT_OK, SEAT_ALREADY, SEAT_LIMIT)}


@dataclass(frozen=True, slots=True)
class SeatAdmission:
    """The answer of :meth:`SeatState.hold` / :meth:`SeatState.login`.

    ``ok`` is False only for ``SEAT_LIMIT``; ``live_seats`` counts the tenant's live
    seats after the call (holds not included).
    """

    ok: bool
    reason: SeatReason
    live_seats: int


@dataclass(frozen=True, slots=True)
class LiveSeat:
    """A live seat: which switch it is on, and since when (epoch microseconds)."""

    seat: str
    switch_id: str
    since_us: int


class SeatState:
    """Each tenant's live seats and seat holds in Redis, one script per operation."""

    def __init__(
        self,
        redis: Redis,
        *,
        hold_ttl: int = keys.DEFAULT_SEAT_HOLD_TTL_SECONDS,
        batch: bool = True,
        runner: ScriptRunner | None = None,
    ) -> None:
        """``runner`` overrides ``batch`` (e.g. the daemon's shared ``BatchingRunner``)."""
        if isinstance(hold_ttl, bool) or not isinstance(hold_ttl, int) or hold_ttl < 1:
            raise InvalidLiveInput(f"hold_ttl must be a positive int of seconds: {hold_ttl!r}")
        self._hold_ttl_ms = hold_ttl * 1000
        self._scripts = PlanScripts(redis, SEAT_SCRIPTS, batch=batch, runner=runner)

    async def aclose(self) -> None:
        """Wait for script calls in flight (the Redis client stays the caller's)."""
        await self._scripts.aclose()

    async def hold(self, tenant: str, seat: str, limit: int | None) -> SeatAdmission:
        """The pre-login ask: keep ``seat`` for a login to come if the tenant has room."""
        reply = await self._run(
            "seat_hold",
            tenant,
            [check_id("seat", seat), _limit(limit), self._hold_ttl_ms],
        )
        return _admission(reply)

    async def login(
        self, tenant: str, seat: str, switch_id: str, at_us: int, limit: int | None
    ) -> SeatAdmission:
        """Count ``seat`` live from ``at_us`` on ``switch_id``, unless over ``limit``."""
        entry = _entry(check_id("switch_id", switch_id), check_count("at_us", at_us))
        reply = await self._run(
            "seat_login", tenant, [check_id("seat", seat), entry, _limit(limit)]
        )
        return _admission(reply)

    async def logout(
        self, tenant: str, seat: str, *, switch_id: str | None = None, at_us: int | None = None
    ) -> bool:
        """Drop ``seat`` and its hold; True when it was live and is now gone.

        With ``switch_id`` a seat live on another switch is kept; with ``at_us`` a seat
        live since after ``at_us`` is kept (a stale logout replayed after a new login).
        """
        switch = "" if switch_id is None else check_id("switch_id", switch_id)
        at = -1 if at_us is None else check_count("at_us", at_us)
        reply = await self._run("seat_logout", tenant, [check_id("seat", seat), switch, at])
        return int(reply) == 1

    async def live(self, tenant: str) -> dict[str, LiveSeat]:
        """The tenant's live seats, by seat."""
        reply = await self._run("seat_list", tenant, [1])
        flat = reply[2:]
        seats: dict[str, LiveSeat] = {}
        for i in range(0, len(flat), 2):
            seat = _text(flat[i])
            switch_id, _, since = _text(flat[i + 1]).rpartition("|")
            seats[seat] = LiveSeat(seat, switch_id, int(since))
        return seats

    async def count(self, tenant: str) -> int:
        """How many seats of the tenant are live (holds not included)."""
        reply = await self._run("seat_list", tenant, [0])
        return int(reply[0])

    async def holds(self, tenant: str) -> int:
        """How many unexpired holds the tenant has (asks not yet followed by a login)."""
        reply = await self._run("seat_list", tenant, [0])
        return int(reply[1])

    async def load(self, tenant: str, seats: Iterable[LiveSeat], *, replace: bool = True) -> int:
        """Write the tenant's live seats (from SQL, at start); returns the live count.

        With ``replace`` (the default) the seats not given are dropped; without it the
        given seats are added to (or overwrite) those live. Holds of loaded seats go.
        """
        args: list[Arg] = [1 if replace else 0]
        for item in seats:
            entry = _entry(
                check_id("switch_id", item.switch_id), check_count("since_us", item.since_us)
            )
            args += [check_id("seat", item.seat), entry]
        return int(await self._run("seat_load", tenant, args))

    async def _run(self, name: str, tenant: str, args: Sequence[Arg]) -> Any:
        account = check_id("tenant", tenant)
        return await self._scripts.run(
            name, [keys.seats_key(account), keys.seat_holds_key(account)], args
        )


def _limit(limit: object) -> int:
    if limit is None:
        return keys.UNLIMITED
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < keys.UNLIMITED:
        raise InvalidLiveInput(f"seat limit must be an int >= 0, or None for no cap: {limit!r}")
    return limit


def _entry(switch_id: str, since_us: int) -> str:
    return f"{switch_id}|{since_us}"


def _admission(reply: Any) -> SeatAdmission:
    text = _text(reply[0])
    reason = _REASONS.get(text)
    if reason is None:
        raise LiveScriptError(f"seat script answered an unknown reason: {text!r}")
    return SeatAdmission(reason != SEAT_LIMIT, reason, int(reply[1]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
