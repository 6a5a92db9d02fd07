"""Denied authorizations counted per account, reason and UTC day, in Redis.

One hash per account and day, tagged with the account like every key of the live state
(``balance.keys``)::

    rk:{<account>}:denials:<YYYY-MM-DD>   hash  reason -> denials that UTC day

:meth:`DenialCounter.record` is one pipelined ``MULTI`` (``HINCRBY`` + ``EXPIRE``: a key
never lives without its TTL), cheap enough for every denial; the hashes expire
:data:`DENIALS_TTL_SECONDS` after their last write, so :meth:`DenialCounter.counts`
reads at most :data:`MAX_DAYS` days back. Counts are a report, not money: a denial
counted twice after a retried pipeline, or lost with Redis, changes no balance.

:meth:`DenialCounter.schedule` is for a synchronous hook (the authorization service's
``on_denial``): it records in a task it keeps, logs a failure and never raises;
:meth:`DenialCounter.aclose` waits for the tasks in flight.

Errors are those of ``balance.live``: ``InvalidLiveInput`` (a bad account id, reason or
day range, naming it), ``LiveStateUnavailable`` (Redis unreachable), ``LiveScriptError``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from balance import keys
from balance.live import InvalidLiveInput, LiveScriptError, LiveStateUnavailable
from balance.usage import check_id

log = structlog.get_logger(__name__)

DENIALS_TTL_SECONDS = 40 * 86_400
"""How long one day's counts live after their last write."""

MAX_DAYS = 40
"""The longest range :meth:`DenialCounter.counts` reads (older days have expired)."""

_MAX_REASON_LENGTH = 64


def denials_key(account_id: str, day: date) -> str:
    """The account's denial counts of one UTC day: reason -> count."""
    return keys.tag(account_id) + "denials:" + day.isoformat()


def utc_day(at: datetime) -> date:
    """The UTC day of an aware datetime (a naive one is taken as UTC)."""
    return (at if at.tzinfo is None else at.astimezone(UTC)).date()


def _reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason or len(reason) > _MAX_REASON_LENGTH:
        raise InvalidLiveInput(f"reason must be a code of 1-{_MAX_REASON_LENGTH} characters")
    if not keys.printable_word(reason):
        raise InvalidLiveInput(f"reason must not hold spaces or controls: {reason!r}")
    return reason


def _days(from_day: date, to_day: date) -> list[date]:
    if to_day < from_day:
        raise InvalidLiveInput(f"to_day {to_day} is before from_day {from_day}")
    count = (to_day - from_day).days + 1
    if count > MAX_DAYS:
        raise InvalidLiveInput(f"at most {MAX_DAYS} days at once, got {count}")
    return [from_day + timedelta(days=n) for n in range(count)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DenialCounter:
    """Per-account, per-reason, per-UTC-day counts of denied authorizations."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, account_id: str, reason: str, at: datetime | None = None) -> None:
        """Count one denial of ``account_id`` for ``reason`` on ``at``'s UTC day (now)."""
        key = denials_key(check_id("account_id", account_id), utc_day(at or datetime.now(UTC)))
        field = _reason(reason)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, field, 1)
                pipe.expire(key, DENIALS_TTL_SECONDS)
                await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise LiveStateUnavailable(f"redis unavailable counting a denial: {exc}") from exc
        except RedisError as exc:
            raise LiveScriptError(f"counting a denial failed on {key}: {exc}") from exc

    def schedule(self, account_id: str, reason: str, at: datetime | None = None) -> None:
        """Record in the background (from a synchronous hook): never raises.

        A denial without a usable account id (empty, braces, spaces) is not counted.
        """
        try:
            check_id("account_id", account_id)
            _reason(reason)
        except InvalidLiveInput:
            log.debug("denial not counted: bad account id or reason", reason=reason)
            return
        task = asyncio.get_running_loop().create_task(
            self._record_logged(account_id, reason, at or datetime.now(UTC))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_logged(self, account_id: str, reason: str, at: datetime) -> None:
        try:
            await self.record(account_id, reason, at)
        except Exception as exc:  # a boundary: the denial was answered already
            log.warning("denial not counted", account_id=account_id, reason=reason, error=str(exc))

    async def aclose(self) -> None:
        """Wait for the recordings in flight (the Redis client stays the caller's)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def daily(
        self, account_id: str, from_day: date, to_day: date
    ) -> dict[date, dict[str, int]]:
        """Each day of ``[from_day, to_day]`` (inclusive, UTC) with its counts by reason."""
        account = check_id("account_id", account_id)
        days = _days(from_day, to_day)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(denials_key(account, day))
                replies = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise LiveStateUnavailable(f"redis unavailable reading denials: {exc}") from exc
        except RedisError as exc:
            raise LiveScriptError(f"reading denials of {account!r} failed: {exc}") from exc
        return {
            day: {_text(reason): int(count) for reason, count in reply.items()}
            for day, reply in zip(days, replies, strict=True)
        }

    async def counts(self, account_id: str, from_day: date, to_day: date) -> dict[str, int]:
        """Denials of ``[from_day, to_day]`` (inclusive, UTC days) by reason."""
        total: Counter[str] = Counter()
        for reasons in (await self.daily(account_id, from_day, to_day)).values():
            total.update(reasons)
        return dict(sorted(total.items()))
