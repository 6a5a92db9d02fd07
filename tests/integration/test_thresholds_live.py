"""Low-balance thresholds kept in a real Redis: one event per crossing, even concurrently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from balance.thresholds import ThresholdRule, ThresholdWatcher

FIVE = ThresholdRule(amount_micros=5_000_000)
TEN_MINUTES = ThresholdRule(minutes=10)
PER_MINUTE = 250_000  # 0.25 per minute: 10 minutes left at 2.50


@pytest.fixture
async def account(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A unique account; its threshold key is deleted afterwards (never a flush)."""
    account_id = f"thr-{uuid.uuid4().hex[:12]}"
    yield account_id
    await redis_client.delete(f"rk:{{{account_id}}}:thresholds")


@pytest.fixture
def watcher(redis_client: aioredis.Redis) -> ThresholdWatcher:
    return ThresholdWatcher(redis_client)


async def test_given_many_debit_ticks_then_each_rule_fires_once(
    watcher: ThresholdWatcher, account: str
) -> None:
    rules = [FIVE, TEN_MINUTES]
    fired: list[ThresholdRule] = []
    for available in range(9_000_000, 0, -100_000):  # 90 ticks of 0.10
        fired += await watcher.check(account, rules, available, PER_MINUTE)
    assert fired == [FIVE, TEN_MINUTES]  # 5.00 first, then 10 minutes (2.50) left


async def test_given_a_top_up_then_the_rule_re_arms(
    watcher: ThresholdWatcher, account: str, redis_client: aioredis.Redis
) -> None:
    assert await watcher.check(account, [FIVE], 4_000_000, None) == [FIVE]
    assert await watcher.check(account, [FIVE], 3_000_000, None) == []
    assert await redis_client.hgetall(f"rk:{{{account}}}:thresholds") == {b"amount:5000000": b"1"}
    assert await watcher.check(account, [FIVE], 50_000_000, None) == []  # top-up: re-armed
    assert await watcher.state(account) == frozenset()
    assert await watcher.check(account, [FIVE], 4_900_000, None) == [FIVE]


async def test_given_concurrent_checks_then_the_crossing_fires_once(
    watcher: ThresholdWatcher, account: str
) -> None:
    results = await asyncio.gather(
        *(watcher.check(account, [FIVE, TEN_MINUTES], 1_000_000, PER_MINUTE) for _ in range(50))
    )
    fired = [rule for result in results for rule in result]
    assert sorted(r.key for r in fired) == sorted([FIVE.key, TEN_MINUTES.key])


async def test_given_a_minutes_rule_then_it_follows_the_rate(
    watcher: ThresholdWatcher, account: str
) -> None:
    assert await watcher.check(account, [TEN_MINUTES], 2_750_000, PER_MINUTE) == []  # 11 min
    assert await watcher.check(account, [TEN_MINUTES], 2_000_000, None) == []  # no rate: keep
    assert await watcher.check(account, [TEN_MINUTES], 2_749_999, PER_MINUTE) == [TEN_MINUTES]
    # the rate went up: still 10 minutes or less, no second event
    assert await watcher.check(account, [TEN_MINUTES], 2_749_999, 2 * PER_MINUTE) == []
    assert await watcher.state(account) == {TEN_MINUTES.key}


async def test_given_a_rule_no_longer_configured_then_its_state_is_removed(
    watcher: ThresholdWatcher, account: str
) -> None:
    await watcher.check(account, [FIVE, TEN_MINUTES], 1_000_000, PER_MINUTE)
    await watcher.check(account, [FIVE], 1_000_000, PER_MINUTE)
    assert await watcher.state(account) == {FIVE.key}
