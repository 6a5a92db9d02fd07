"""Denial counts per account, reason and UTC day (``balance.denials``) on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from balance.denials import DENIALS_TTL_SECONDS, MAX_DAYS, DenialCounter, denials_key
from balance.live import InvalidLiveInput, LiveStateUnavailable


def account() -> str:
    return f"den-{uuid.uuid4().hex[:8]}"


async def test_given_denials_on_three_days_when_counted_then_by_reason_over_the_range(
    redis_client: aioredis.Redis,
) -> None:
    counter, acc = DenialCounter(redis_client), account()
    first = datetime(2026, 4, 1, 12, tzinfo=UTC)
    for days, reason, times in [(0, "NO_RATE", 2), (1, "NO_RATE", 1), (1, "CPS_LIMIT", 4),
                                (2, "SEAT_LIMIT", 1)]:  # fmt: skip
        for _ in range(times):
            await counter.record(acc, reason, first + timedelta(days=days))
    assert await counter.counts(acc, date(2026, 4, 1), date(2026, 4, 3)) == {
        "CPS_LIMIT": 4, "NO_RATE": 3, "SEAT_LIMIT": 1,
    }  # fmt: skip
    assert await counter.counts(acc, date(2026, 4, 2), date(2026, 4, 2)) == {
        "CPS_LIMIT": 4, "NO_RATE": 1,
    }  # fmt: skip
    assert await counter.counts(acc, date(2026, 4, 4), date(2026, 4, 9)) == {}
    daily = await counter.daily(acc, date(2026, 3, 31), date(2026, 4, 1))
    assert daily == {date(2026, 3, 31): {}, date(2026, 4, 1): {"NO_RATE": 2}}


async def test_given_a_recorded_denial_then_its_key_is_tagged_and_expires(
    redis_client: aioredis.Redis,
) -> None:
    counter, acc = DenialCounter(redis_client), account()
    at = datetime(2026, 4, 1, 23, 59, tzinfo=UTC)
    await counter.record(acc, "NO_RATE", at)
    key = denials_key(acc, date(2026, 4, 1))
    assert key == f"rk:{{{acc}}}:denials:2026-04-01"
    assert await redis_client.hgetall(key) == {b"NO_RATE": b"1"}
    ttl = await redis_client.ttl(key)
    assert DENIALS_TTL_SECONDS - 60 < ttl <= DENIALS_TTL_SECONDS


async def test_given_many_denials_scheduled_at_once_then_every_one_is_counted(
    redis_client: aioredis.Redis,
) -> None:
    counter, acc = DenialCounter(redis_client), account()
    for _ in range(50):
        counter.schedule(acc, "INSUFFICIENT_CREDIT")
    counter.schedule("", "INSUFFICIENT_CREDIT")  # no account: not counted, no error
    counter.schedule("bad {tag}", "INSUFFICIENT_CREDIT")
    await counter.aclose()
    today = datetime.now(UTC).date()
    assert await counter.counts(acc, today, today) == {"INSUFFICIENT_CREDIT": 50}


async def test_given_redis_down_when_scheduled_then_logged_and_never_raised() -> None:
    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    counter = DenialCounter(dead)
    try:
        with capture_logs() as logs:
            counter.schedule("acc-1", "NO_RATE")
            await counter.aclose()
        assert [e["event"] for e in logs] == ["denial not counted"]
        with pytest.raises(LiveStateUnavailable):
            await counter.record("acc-1", "NO_RATE")
    finally:
        await dead.aclose()


@pytest.mark.parametrize(
    ("account_id", "reason"),
    [("", "NO_RATE"), ("a{b}", "NO_RATE"), ("acc", ""), ("acc", "TWO WORDS"), ("acc", "X" * 65)],
)
async def test_given_a_bad_id_or_reason_when_recorded_then_refused_naming_it(
    redis_client: aioredis.Redis, account_id: str, reason: str
) -> None:
    with pytest.raises(InvalidLiveInput):
        await DenialCounter(redis_client).record(account_id, reason)


async def test_given_a_range_longer_than_kept_or_reversed_then_refused(
    redis_client: aioredis.Redis,
) -> None:
    counter = DenialCounter(redis_client)
    start = date(2026, 1, 1)
    await counter.counts("acc", start, start + timedelta(days=MAX_DAYS - 1))
    with pytest.raises(InvalidLiveInput, match="at most 40 days"):
        await counter.counts("acc", start, start + timedelta(days=MAX_DAYS))
    with pytest.raises(InvalidLiveInput, match="before"):
        await counter.counts("acc", start, start - timedelta(days=1))


async def test_given_concurrent_records_when_counted_then_none_lost(
    redis_client: aioredis.Redis,
) -> None:
    counter, acc = DenialCounter(redis_client), account()
    at = datetime(2026, 5, 5, tzinfo=UTC)
    await asyncio.gather(*(counter.record(acc, "CONCURRENCY_LIMIT", at) for _ in range(40)))
    assert await counter.counts(acc, at.date(), at.date()) == {"CONCURRENCY_LIMIT": 40}
