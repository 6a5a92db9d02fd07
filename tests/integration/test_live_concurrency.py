"""I1 under concurrency: N parallel attempts on one account, exactly the allowed number pass."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from balance import keys
from balance.batching import BatchingRunner
from balance.live import AccountLimits, LiveState
from tests.support import services

SLICE = 1_234_567  # micro-units: 1.234567 of the currency


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def live(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[LiveState]:
    state = LiveState(redis_client, batch=request.param)
    try:
        yield state
    finally:
        await state.aclose()


RUN = f"live-{uuid.uuid4().hex[:12]}"  # every account of this module starts with it


def new_account() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", autouse=True)
def _delete_accounts(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


async def test_given_credit_for_k_slices_when_50_reserve_at_once_then_exactly_k_pass(
    live: LiveState,
) -> None:
    account, k = new_account(), 17
    # balance + credit limit covers exactly k slices (one micro-unit short of k + 1)
    await live.load_account(AccountLimits(account, "active", 10 * SLICE, 7 * SLICE, None))
    await live.credit(account, SLICE - 1, "top-up-1")

    results = await asyncio.gather(*(live.reserve(account, f"call-{i}", SLICE) for i in range(50)))

    passed = [r for r in results if r.ok]
    assert len(passed) == k
    assert {r.reason for r in results if not r.ok} == {"INSUFFICIENT_CREDIT"}
    assert all(r.reserved_micros == SLICE for r in passed)
    assert (
        sorted(r.available_micros for r in passed)
        == [(k - n) * SLICE + SLICE - 1 for n in range(1, k + 1)][::-1]
    )
    snap = await live.snapshot(account)
    assert snap is not None
    assert snap.reserved_micros == k * SLICE == sum(snap.calls.values())
    assert len(snap.calls) == k


async def test_given_live_calls_when_they_extend_concurrently_in_rounds_then_never_overdraft(
    live: LiveState,
) -> None:
    account = new_account()
    funds = 40 * SLICE
    await live.load_account(AccountLimits(account, "active", 30 * SLICE, 10 * SLICE, None))
    calls = [f"call-{i}" for i in range(25)]
    first = await asyncio.gather(*(live.reserve(account, c, SLICE) for c in calls))
    assert all(r.ok for r in first)
    rng = random.Random(7)
    held = {c: SLICE for c in calls}

    for round_no in range(8):
        asks = {c: rng.randrange(0, SLICE) for c in calls}
        partial = {c: rng.random() < 0.5 for c in calls}
        results = await asyncio.gather(
            *(live.extend(account, c, asks[c], partial=partial[c]) for c in calls)
        )
        for c, r in zip(calls, results, strict=True):
            assert r.granted_micros <= asks[c]
            assert r.ok == (r.granted_micros == asks[c]), (round_no, c, r)
            if not partial[c]:
                assert r.granted_micros in (0, asks[c])
            held[c] += r.granted_micros
            assert r.reserved_micros == held[c]
            assert r.available_micros >= 0
        snap = await live.snapshot(account)
        assert snap is not None
        assert snap.calls == held
        assert snap.reserved_micros == sum(held.values()) <= funds
    # the demand (25 calls x 8 rounds x ~SLICE/2) exceeds the funds: they end up exhausted
    snap = await live.snapshot(account)
    assert snap is not None
    assert funds - snap.reserved_micros < SLICE


async def test_given_concurrency_limit_when_n_attempt_in_parallel_then_exactly_limit_pass(
    live: LiveState,
) -> None:
    account, limit = new_account(), 5
    await live.load_account(AccountLimits(account, "active", 1000 * SLICE, 0, limit))

    results = await asyncio.gather(*(live.reserve(account, f"call-{i}", SLICE) for i in range(30)))

    passed = [i for i, r in enumerate(results) if r.ok]
    assert len(passed) == limit
    assert {r.reason for r in results if not r.ok} == {"CONCURRENCY_LIMIT"}
    # a freed slot is taken by exactly one of the next parallel attempts
    assert await live.release(account, f"call-{passed[0]}")
    again = await asyncio.gather(*(live.reserve(account, f"new-{i}", SLICE) for i in range(10)))
    assert sum(r.ok for r in again) == 1


async def test_given_one_call_when_settled_concurrently_then_debited_once(
    live: LiveState,
) -> None:
    account = new_account()
    await live.load_account(AccountLimits(account, "active", 100 * SLICE, 0, None))
    assert (await live.reserve(account, "call-1", SLICE)).ok

    settled = await asyncio.gather(*(live.settle(account, "call-1", 3 * SLICE) for _ in range(20)))

    assert settled.count(True) == 1
    snap = await live.snapshot(account)
    assert snap is not None
    assert snap.balance_micros == 97 * SLICE
    assert snap.reserved_micros == 0 and snap.calls == {}


async def test_given_one_key_when_credited_concurrently_then_applied_once(
    live: LiveState,
) -> None:
    account = new_account()
    await live.load_account(AccountLimits(account, "active", 0, 0, None))

    applied = await asyncio.gather(*(live.credit(account, 5 * SLICE, "pay-42") for _ in range(20)))

    assert applied.count(True) == 1
    snap = await live.snapshot(account)
    assert snap is not None and snap.balance_micros == 5 * SLICE


async def test_given_two_accounts_when_reserving_in_one_batch_then_caps_stay_per_account(
    live: LiveState,
) -> None:
    a, b = new_account(), new_account()
    await live.load_account(AccountLimits(a, "active", 3 * SLICE, 0, None))
    await live.load_account(AccountLimits(b, "active", 5 * SLICE, 0, 2))

    results = await asyncio.gather(
        *(live.reserve(acct, f"call-{i}", SLICE) for i in range(10) for acct in (a, b))
    )

    by_account = {a: 0, b: 0}
    for i, r in enumerate(results):
        by_account[(a, b)[i % 2]] += r.ok
    assert by_account == {a: 3, b: 2}


async def test_given_a_small_pool_when_300_reserve_at_once_then_batches_fit_and_k_pass(
    redis_url: str,
) -> None:
    # two connections only: without batching 300 callers would need 300 of them
    client = aioredis.Redis.from_url(redis_url, max_connections=2)
    runner = BatchingRunner(client, max_batch=16, max_in_flight=2)
    live = LiveState(client, runner=runner)
    account, k = new_account(), 123
    await live.load_account(AccountLimits(account, "active", k * SLICE, 0, None))

    results = await asyncio.gather(*(live.reserve(account, f"call-{i}", SLICE) for i in range(300)))

    assert sum(r.ok for r in results) == k
    assert {r.reason for r in results if not r.ok} == {"INSUFFICIENT_CREDIT"}
    snap = await live.snapshot(account)
    assert snap is not None and snap.reserved_micros == k * SLICE
    await live.aclose()
    await client.aclose()
