"""Shared caps and the account's reserve in ONE script (``reserve_capped.lua``), on a real
Redis: exactly the allowed number of N parallel attempts pass, a denial on either side
holds nothing on the other, a repeat is idempotent, bad input is named."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from balance import keys
from balance.capped_reserve import CappedReserve
from balance.caps import CapScope, SharedCaps
from balance.live import AccountLimits, InvalidLiveInput, LiveState

# the ids of test_caps_live's run, and its clean-up of their keys (here at this module's end)
from tests.integration.test_caps_live import SLICE, _delete_keys, new_id  # noqa: F401


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def parts(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[tuple[LiveState, SharedCaps, CappedReserve]]:
    live = LiveState(redis_client, batch=request.param, lease_ttl=3600)
    caps = SharedCaps(redis_client, slot_ttl=3600, call_ttl=7200, batch=request.param)
    try:
        yield live, caps, CappedReserve(live, caps)
    finally:
        await caps.aclose()
        await live.aclose()


async def _account(live: LiveState, slices: int, **extra: object) -> str:
    account = new_id()
    limits = AccountLimits(account, "active", slices * SLICE, 0, None, **extra)  # type: ignore[arg-type]
    await live.load_account(limits)
    return account


def _trunks(*limits: int) -> tuple[CapScope, ...]:
    """Trunks of a route list, in route order, with these concurrency limits."""
    return tuple(CapScope(f"trunk:{new_id()}", concurrency_limit=limit) for limit in limits)


async def _cps_admissions(redis_client: aioredis.Redis, scope: str) -> int:
    return int(await redis_client.zcard(keys.cap_cps_key(scope)))


async def test_given_a_reseller_cap_when_50_attempt_at_once_then_exactly_the_cap_pass_and_reserve(
    parts: tuple[LiveState, SharedCaps, CappedReserve],
) -> None:
    live, caps, capped = parts
    run = new_id()
    account = await _account(live, 100)
    reseller = (CapScope(f"reseller:{new_id()}", concurrency_limit=9, cps_limit=100),)

    results = await asyncio.gather(
        *(capped.reserve(account, f"{run}-a{i}", SLICE, reseller) for i in range(50))
    )

    passed = [reservation for admission, reservation in results if reservation.ok]
    assert len(passed) == 9
    assert all(admission.ok for admission, reservation in results if reservation.ok)
    assert {(a.reason, a.scope, r.reason) for a, r in results if not r.ok} == {
        ("CONCURRENCY_LIMIT", reseller[0].name, "CONCURRENCY_LIMIT")
    }
    snapshot = await live.snapshot(account)
    assert snapshot is not None and len(snapshot.calls) == 9  # a denied call holds nothing
    assert snapshot.reserved_micros == 9 * SLICE
    assert await caps.live_calls(reseller[0].name) == 9


async def test_given_credit_for_4_when_50_attempt_at_once_then_4_pass_and_the_rest_give_slots_back(
    redis_client: aioredis.Redis, parts: tuple[LiveState, SharedCaps, CappedReserve]
) -> None:
    live, caps, capped = parts
    run = new_id()
    account = await _account(live, 4)
    reseller = (CapScope(f"reseller:{new_id()}", concurrency_limit=40, cps_limit=45),)

    results = await asyncio.gather(
        *(capped.reserve(account, f"{run}-b{i}", SLICE, reseller) for i in range(50))
    )

    assert sum(r.ok for _, r in results) == 4
    denied = [(a, r) for a, r in results if not r.ok]
    # the shared caps admitted every denied call they had room for; the account said no
    assert {r.reason for a, r in denied if a.ok} == {"INSUFFICIENT_CREDIT"}
    assert await caps.live_calls(reseller[0].name) == 4  # slots given back
    assert await _cps_admissions(redis_client, reseller[0].name) == 4  # and CPS admissions
    snapshot = await live.snapshot(account)
    assert snapshot is not None and snapshot.reserved_micros == 4 * SLICE


async def test_given_capped_trunks_when_calls_overflow_then_they_fill_in_route_order(
    parts: tuple[LiveState, SharedCaps, CappedReserve],
) -> None:
    live, _, capped = parts
    run, account, trunks = new_id(), await _account(live, 100), _trunks(2, 3)

    results = await asyncio.gather(
        *(capped.reserve(account, f"{run}-t{i}", SLICE, (), trunks) for i in range(10))
    )

    assert sorted(a.taken for a, r in results if r.ok) == [0, 0, 1, 1, 1]  # type: ignore[type-var]
    assert {(a.reason, r.ok) for a, r in results if not a.ok} == {("CONCURRENCY_LIMIT", False)}
    snapshot = await live.snapshot(account)
    assert snapshot is not None and len(snapshot.calls) == 5


async def test_given_an_admitted_call_when_repeated_then_the_same_trunk_and_one_reservation(
    parts: tuple[LiveState, SharedCaps, CappedReserve],
) -> None:
    live, caps, capped = parts
    run, account, trunks = new_id(), await _account(live, 100), _trunks(0, 5)
    call = f"{run}-repeat"

    first = await capped.reserve(account, call, SLICE, (), trunks)
    again = await capped.reserve(account, call, SLICE, (), trunks)

    assert first[0].taken == again[0].taken == 1
    assert first[1].ok and again[1].ok and again[1].reserved_micros == SLICE
    snapshot = await live.snapshot(account)
    assert snapshot is not None and snapshot.reserved_micros == SLICE
    assert await caps.live_calls(trunks[1].name) == 1


async def test_given_the_account_cps_full_when_reserving_then_the_shared_cps_is_refunded(
    redis_client: aioredis.Redis, parts: tuple[LiveState, SharedCaps, CappedReserve]
) -> None:
    live, _, capped = parts
    run = new_id()
    account = await _account(live, 100, cps_limit=1)
    reseller = (CapScope(f"reseller:{new_id()}", cps_limit=10),)

    first = await capped.reserve(account, f"{run}-c1", SLICE, reseller)
    second = await capped.reserve(account, f"{run}-c2", SLICE, reseller)

    assert first[1].ok
    assert second[0].ok and second[1].reason == "CPS_LIMIT"
    assert await _cps_admissions(redis_client, reseller[0].name) == 1


async def test_given_bad_input_when_reserving_then_the_culprit_is_named_and_nothing_held(
    parts: tuple[LiveState, SharedCaps, CappedReserve],
) -> None:
    live, caps, capped = parts
    run = new_id()
    account = await _account(live, 100)
    reseller = (CapScope(f"reseller:{new_id()}", concurrency_limit=5),)

    with pytest.raises(InvalidLiveInput, match="account_id"):
        await capped.reserve("a b", f"{run}-x", SLICE, reseller)
    with pytest.raises(InvalidLiveInput, match="amount_micros"):
        await capped.reserve(account, f"{run}-x", -1, reseller)
    with pytest.raises(InvalidLiveInput, match="call_key"):
        await capped.reserve(account, "", SLICE, reseller)
    with pytest.raises(InvalidLiveInput, match="scope"):
        await capped.reserve(account, f"{run}-x", SLICE, (CapScope("reseller:a b", 1),))

    assert await caps.live_calls(reseller[0].name) == 0
    snapshot = await live.snapshot(account)
    assert snapshot is not None and snapshot.calls == {}
