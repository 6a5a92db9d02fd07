"""Live state in Redis: the hot balance, credit reservations and concurrency slots.

Each operation is ONE atomic Lua script over the keys of one account (``balance.keys``),
so every cap is checked and every reservation made without a race, on a single Redis or
on Redis Cluster. Amounts are integer micro-units. Redis holds only hot state: SQL is
the source of truth and ``rebuild`` reloads balances from it at daemon start.

Reservations are leases: a call that is neither extended nor settled within
``lease_ttl`` seconds (a lost daemon, a missed hangup) is released by the next
``reserve`` or ``extend`` of its account.

Retries: redis-py may re-send a script after a connection error. ``reserve``, ``settle``,
``release`` and ``credit`` are idempotent; a re-sent ``extend`` may add its slice twice,
which over-reserves (released at settlement) but never overdraws.

Errors::

    LiveStateError                 code
    ├── InvalidLiveInput           BAD_REQUEST          a bad id or amount (names it);
    │                                                   also a ValueError
    ├── LiveStateUnavailable       SERVICE_UNAVAILABLE  Redis unreachable / timed out
    └── LiveScriptError            SCRIPT_FAILED        Redis refused a script call

Business denials are not errors: ``reserve`` and ``extend`` answer a ``Reservation``
with a stable reason code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from balance import keys
from balance.batching import BatchingRunner, bulk, evalsha_head, packed_evalsha, script_runner
from balance.scripts import Arg, LuaScript, ScriptRunner, load_library

log = structlog.get_logger(__name__)

Status = Literal["active", "suspended", "closed"]
STATUSES: frozenset[str] = frozenset({"active", "suspended", "closed"})
MAX_MICROS = 2**53
"""Amounts are below this (exact in a Lua double)."""
_MAX_ID_LENGTH = 256
_RESERVE_KEYS_KEPT = 100_000  # accounts whose packed ``reserve`` keys are kept
_REBUILD_CHUNK = 256  # accounts loaded concurrently (one pipeline when batched)


class LiveStateError(Exception):
    """Base of the live-state errors; ``code`` is stable."""

    code: ClassVar[str] = "LIVE_STATE_ERROR"


class InvalidLiveInput(LiveStateError, ValueError):
    """A bad account id, call key, idempotency key or amount (the message names it)."""

    code: ClassVar[str] = "BAD_REQUEST"


class LiveStateUnavailable(LiveStateError):
    """Redis could not be reached or did not answer in time."""

    code: ClassVar[str] = "SERVICE_UNAVAILABLE"


class LiveScriptError(LiveStateError):
    """Redis refused a script call (a Lua error, a key of the wrong type)."""

    code: ClassVar[str] = "SCRIPT_FAILED"


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """An account's hot state as loaded from SQL."""

    account_id: str
    status: str  # 'active' | 'suspended' | 'closed'
    balance_micros: int
    credit_limit_micros: int
    concurrency_limit: int | None  # None: no cap
    trial_ends_ms: int | None = None  # epoch ms the trial window closes; None: no trial
    cps_limit: int | None = None  # calls admitted per second; None: no cap
    seat_limit: int | None = None  # live agent seats; None: no cap
    suspend_cut: bool = True  # a suspension cuts the account's live calls


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer of ``reserve`` / ``extend``.

    ``reserved_micros`` is the total now reserved for the call, ``available_micros`` is
    balance + credit limit - every reservation of the account (after this one), and
    ``granted_micros`` what this call added (``extend`` may grant part of the request).
    """

    ok: bool
    reason: str  # OK, UNKNOWN_ACCOUNT, UNKNOWN_CALL, ACCOUNT_SUSPENDED, TRIAL_EXPIRED,
    # CONCURRENCY_LIMIT, CPS_LIMIT, INSUFFICIENT_CREDIT
    reserved_micros: int
    available_micros: int
    granted_micros: int = 0
    live_calls: int = 0  # the account's live calls after a reserve (0 when not known)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One consistent read of an account's hot state."""

    balance_micros: int
    credit_limit_micros: int
    reserved_micros: int
    calls: dict[str, int]
    status: str = "active"
    concurrency_limit: int | None = None


class LiveState:
    """Credit reservations, concurrency slots and the hot balance, one script each."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_ttl: int = keys.DEFAULT_LEASE_TTL_SECONDS,
        batch: bool = True,
        runner: ScriptRunner | None = None,
    ) -> None:
        """``runner`` overrides ``batch`` (e.g. a ``BatchingRunner`` with tuned limits)."""
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int) or lease_ttl < 1:
            raise InvalidLiveInput(f"lease_ttl must be a positive int of seconds: {lease_ttl!r}")
        self._lease_ttl_ms = lease_ttl * 1000
        self._scripts = load_library()
        self._runner: ScriptRunner = runner or script_runner(redis, batch=batch)
        # the batched ``reserve``: each account's keys and command start in RESP
        self._reserve_packed: dict[str, tuple[bytes, bytes]] = {}
        self._reserve_sha = evalsha_head(self._scripts["reserve"])
        self._lease_ttl_bulk = bulk(b"%d" % self._lease_ttl_ms)

    @property
    def lease_ttl_ms(self) -> int:
        """How long a reservation lives without renewal, in ms."""
        return self._lease_ttl_ms

    async def aclose(self) -> None:
        """Wait for script calls in flight (the Redis client stays the caller's)."""
        await self._runner.aclose()

    async def load_account(self, limits: AccountLimits) -> None:
        """Write one account's hot state from SQL; its live reservations are kept."""
        account = _account_id(limits.account_id)
        if limits.status not in STATUSES:
            raise InvalidLiveInput(
                f"status of account {account!r} must be one of {sorted(STATUSES)}: "
                f"{limits.status!r}"
            )
        limit = limits.concurrency_limit
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise InvalidLiveInput(f"concurrency_limit of account {account!r}: {limit!r}")
        for name in ("trial_ends_ms", "cps_limit", "seat_limit"):
            value = getattr(limits, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise InvalidLiveInput(f"{name} of account {account!r}: {value!r}")
        await self._run(
            "load",
            [keys.account_key(account), keys.calls_key(account)],
            [
                limits.status,
                _micros("balance_micros", limits.balance_micros, signed=True),
                _micros("credit_limit_micros", limits.credit_limit_micros),
                keys.UNLIMITED if limit is None else limit,
                _or_unlimited(limits.trial_ends_ms),
                _or_unlimited(limits.cps_limit),
                _or_unlimited(limits.seat_limit),
                1 if limits.suspend_cut else 0,
            ],
        )

    async def rebuild(self, accounts: Iterable[AccountLimits]) -> int:
        """Reload every account's hot state from SQL (daemon start); returns the count."""
        count = 0
        chunk: list[AccountLimits] = []
        for limits in accounts:
            chunk.append(limits)
            if len(chunk) == _REBUILD_CHUNK:
                await asyncio.gather(*(self.load_account(item) for item in chunk))
                count, chunk = count + len(chunk), []
        await asyncio.gather(*(self.load_account(item) for item in chunk))
        count += len(chunk)
        log.info("live state rebuilt", accounts=count)
        return count

    async def reserve(self, account_id: str, call_key: str, amount_micros: int) -> Reservation:
        """Check status, trial, concurrency, CPS and credit; reserve a first slice (a lease)."""
        pending = self.reserve_soon(account_id, call_key, amount_micros)
        if pending is None:
            reply = await self._run(
                "reserve", *self.reserve_arguments(account_id, call_key, amount_micros)
            )
            return reservation(reply)
        with contextlib.suppress(RedisError, OSError):  # raised as the script's below
            await pending
        return self.reservation_of(account_id, pending)

    def reserve_soon(
        self, account_id: str, call_key: str, amount_micros: int
    ) -> asyncio.Future[Any] | None:
        """Queue ``reserve`` in the current batch; the future of its raw reply, which
        ``reservation_of`` reads once done. None when the scripts do not run in batches (then
        ``reserve`` is the way). Bad input raises ``InvalidLiveInput`` at once."""
        runner = self._runner
        if type(runner) is not BatchingRunner:
            return None
        # the hot path: the command packed from the account's cached start
        head = self._packed_reserve(account_id, call_key, amount_micros)[1]
        command = b"".join(
            [head, bulk(call_key.encode()), bulk(b"%d" % amount_micros), self._lease_ttl_bulk]
        )
        return runner.submit_packed(self._scripts["reserve"], command)

    def reservation_of(self, account_id: str, pending: asyncio.Future[Any]) -> Reservation:
        """The reservation of a done ``reserve_soon`` future; its Redis failure raised as
        ``reserve`` raises it (``script_failure``), a cancelled one as ``CancelledError``."""
        try:
            reply = pending.result()
        except (RedisError, OSError) as exc:
            raise script_failure(exc, "reserve", keys.account_key(account_id)) from exc
        return reservation(reply)

    def packed_reserve_keys(self, account_id: str, call_key: str, amount_micros: int) -> bytes:
        """The account's four ``reserve`` keys in RESP, built and checked once per account;
        the call's own input checked every time (``InvalidLiveInput``)."""
        return self._packed_reserve(account_id, call_key, amount_micros)[0]

    def _packed_reserve(
        self, account_id: str, call_key: str, amount_micros: int
    ) -> tuple[bytes, bytes]:
        """The account's packed ``reserve`` keys, and the start of its commands (EVALSHA,
        numkeys, the keys), kept per account; the call's input checked every time."""
        packed = self._reserve_packed.get(account_id)
        if (
            packed is not None
            and type(call_key) is str
            and 0 < len(call_key) <= _MAX_ID_LENGTH
            and type(amount_micros) is int
            and 0 <= amount_micros < MAX_MICROS
        ):
            return packed
        script_keys, _ = self.reserve_arguments(account_id, call_key, amount_micros)  # or raises
        account_keys = b"".join([bulk(key.encode()) for key in script_keys])
        packed = account_keys, packed_evalsha(self._reserve_sha, 4, 3, account_keys)
        if len(self._reserve_packed) >= _RESERVE_KEYS_KEPT:
            self._reserve_packed.clear()
        self._reserve_packed[account_id] = packed
        return packed

    def reserve_arguments(
        self, account_id: str, call_key: str, amount_micros: int
    ) -> tuple[list[str], list[Arg]]:
        """The ``reserve`` script's keys and arguments, checked (``InvalidLiveInput``)."""
        account = _account_id(account_id)
        return [*_call_keys(account), keys.cps_key(account)], [
            _key("call_key", call_key),
            _micros("amount_micros", amount_micros),
            self._lease_ttl_ms,
        ]

    async def extend(
        self, account_id: str, call_key: str, amount_micros: int, *, partial: bool = True
    ) -> Reservation:
        """Add to a call's reservation and renew its lease.

        With ``partial`` the available part is granted (possibly 0) and ``ok`` is False
        with ``INSUFFICIENT_CREDIT`` unless the whole amount was granted.
        """
        account = _account_id(account_id)
        reply = await self._run(
            "extend",
            _call_keys(account),
            [
                _key("call_key", call_key),
                _micros("amount_micros", amount_micros),
                self._lease_ttl_ms,
                1 if partial else 0,
            ],
        )
        reason = _text(reply[0])
        return Reservation(reason == "OK", reason, int(reply[1]), int(reply[3]), int(reply[2]))

    async def settle(self, account_id: str, call_key: str, cost_micros: int) -> bool:
        """Release the call and debit ``cost_micros`` once; False if already settled."""
        account = _account_id(account_id)
        call = _key("call_key", call_key)
        reply = await self._run(
            "settle",
            [*_call_keys(account), keys.settled_key(account, call)],
            [call, _micros("cost_micros", cost_micros), keys.SETTLED_TTL_SECONDS],
        )
        if int(reply) == 0:
            log.debug("call already settled", account=account, call_key=call)
        return int(reply) == 1

    async def release(self, account_id: str, call_key: str, *, refund: bool = False) -> bool:
        """Drop a call's reservation without charge; False if it held none.

        ``refund``: the call was denied by a later check of its authorization, so its
        calls-per-second admission is given back as well.
        """
        account = _account_id(account_id)
        reply = await self._run(
            "release",
            [*_call_keys(account), keys.cps_key(account)],
            [_key("call_key", call_key), 1 if refund else 0],
        )
        return int(reply) >= 0

    async def credit(self, account_id: str, amount_micros: int, idempotency_key: str) -> bool:
        """Add a top-up to the hot balance once per key.

        False when the key was already applied, or when the account has no hot state
        (its next load from SQL includes the top-up; the key is remembered anyway).
        """
        account = _account_id(account_id)
        key = _key("idempotency_key", idempotency_key)
        reply = await self._run(
            "credit",
            [keys.account_key(account), keys.credited_key(account, key)],
            [_micros("amount_micros", amount_micros), keys.CREDIT_MARKER_TTL_SECONDS],
        )
        if int(reply) < 0:
            log.debug("top-up for account without hot state", account=account)
        return int(reply) == 1

    async def has_call(self, account_id: str, call_key: str) -> bool:
        """Whether the call holds an unexpired reservation lease."""
        account = _account_id(account_id)
        reply = await self._run(
            "has_call", [keys.leases_key(account)], [_key("call_key", call_key)]
        )
        return int(reply) == 1

    async def reserved(self, account_id: str, call_key: str) -> int:
        """Micro-units one call holds (0 when it holds no reservation): one field, where a
        snapshot would read every live call of the tenant."""
        account = _account_id(account_id)
        reply = await self._run("reserved", [keys.calls_key(account)], [_key("call_key", call_key)])
        return int(reply)

    async def snapshot(self, account_id: str) -> AccountSnapshot | None:
        """The account's hot state, or None when Redis holds none for it."""
        account = _account_id(account_id)
        reply = await self._run(
            "snapshot", [keys.account_key(account), keys.calls_key(account)], []
        )
        if int(reply[0]) == 0:
            return None
        flat = reply[6:]
        calls = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        limit = int(reply[5])
        return AccountSnapshot(
            balance_micros=int(reply[1]),
            credit_limit_micros=int(reply[2]),
            reserved_micros=int(reply[3]),
            calls=calls,
            status=_text(reply[4]),
            concurrency_limit=None if limit < 0 else limit,
        )

    async def _run(self, name: str, script_keys: Sequence[str], args: Sequence[Arg]) -> Any:
        script: LuaScript = self._scripts[name]
        try:
            return await self._runner.run(script, script_keys, args)
        except (RedisError, OSError) as exc:
            raise script_failure(exc, name, script_keys[0]) from exc


def script_failure(exc: Exception, script: str, key: str | None = None) -> LiveStateError:
    """A script call's Redis error as this package's: ``LiveStateUnavailable`` when Redis
    could not be reached in time, else ``LiveScriptError`` (naming the first ``key``)."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return LiveStateUnavailable(f"redis unavailable during {script}: {exc}")
    where = "" if key is None else f" on {key}"
    return LiveScriptError(f"script {script} failed{where}: {exc}")


def reservation(reply: Sequence[Any]) -> Reservation:
    """The ``reserve`` script's reply ``{reason, reserved, available, live calls}``."""
    reason, reserved, available = _text(reply[0]), int(reply[1]), int(reply[2])
    ok = reason == "OK"
    return Reservation(ok, reason, reserved, available, reserved if ok else 0, int(reply[3]))


def _or_unlimited(value: int | None) -> int:
    return keys.UNLIMITED if value is None else value


def _call_keys(account: str) -> list[str]:
    return [keys.account_key(account), keys.calls_key(account), keys.leases_key(account)]


def _account_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        raise InvalidLiveInput(
            f"account_id must be a non-empty str of at most {_MAX_ID_LENGTH} characters: {value!r}"
        )
    if "{" in value or "}" in value or not keys.printable_word(value):
        raise InvalidLiveInput(
            f"account_id must not contain braces, spaces or control characters: {value!r}"
        )
    return value


def _key(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        raise InvalidLiveInput(
            f"{field} must be a non-empty str of at most {_MAX_ID_LENGTH} characters: {value!r}"
        )
    return value


def _micros(field: str, value: object, *, signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLiveInput(
            f"{field} must be an int of micro-units, not {type(value).__name__}: {value!r}"
        )
    if abs(value) >= MAX_MICROS or (value < 0 and not signed):
        raise InvalidLiveInput(f"{field} out of range: {value!r}")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
