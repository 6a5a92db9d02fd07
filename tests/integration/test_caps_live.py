"""Real-time caps in Redis: N parallel attempts, exactly the allowed number pass.

The account's own caps (calls per second, trial window, suspension policy) in its
``reserve`` / ``extend`` scripts, and the shared caps (a reseller over its customers, a
trunk) in the one ``caps`` script, on a real Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from balance import keys
from balance.caps import CapScope, SharedCaps
from balance.live import AccountLimits, InvalidLiveInput, LiveState
from tests.support import services

SLICE = 1_000_000
RUN = f"caps-{uuid.uuid4().hex[:10]}"


def new_id() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's keys afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*", f"{keys.CAPS_TAG}*{RUN}-*")


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def live(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[LiveState]:
    state = LiveState(redis_client, batch=request.param)
    try:
        yield state
    finally:
        await state.aclose()


@pytest.fixture
async def caps(redis_client: aioredis.Redis) -> AsyncIterator[SharedCaps]:
    shared = SharedCaps(redis_client, slot_ttl=3600, call_ttl=7200)
    try:
        yield shared
    finally:
        await shared.aclose()


def _limits(account: str, **extra: object) -> AccountLimits:
    return AccountLimits(account, "active", 1000 * SLICE, 0, None, **extra)  # type: ignore[arg-type]


# --- the account's own caps -------------------------------------------------------------


async def test_given_cps_limit_when_40_attempt_at_once_then_exactly_the_limit_pass(
    live: LiveState,
) -> None:
    account, cps = new_id(), 7
    await live.load_account(_limits(account, cps_limit=cps))

    results = await asyncio.gather(*(live.reserve(account, f"c{i}", SLICE) for i in range(40)))

    assert sum(r.ok for r in results) == cps
    assert {r.reason for r in results if not r.ok} == {"CPS_LIMIT"}
    snap = await live.snapshot(account)
    assert snap is not None and len(snap.calls) == cps  # a denied call holds nothing


async def test_given_cps_window_when_a_second_passed_then_calls_are_admitted_again(
    live: LiveState,
) -> None:
    account = new_id()
    await live.load_account(_limits(account, cps_limit=2))
    assert (await live.reserve(account, "a", SLICE)).ok
    assert (await live.reserve(account, "b", SLICE)).ok
    assert (await live.reserve(account, "c", SLICE)).reason == "CPS_LIMIT"
    await asyncio.sleep(1.05)  # the window slides past the first two admissions
    assert (await live.reserve(account, "c", SLICE)).ok


async def test_given_a_later_check_denied_the_call_when_refunded_then_its_cps_slot_returns(
    live: LiveState,
) -> None:
    account = new_id()
    await live.load_account(_limits(account, cps_limit=1))
    assert (await live.reserve(account, "a", SLICE)).ok
    await live.release(account, "a", refund=True)  # e.g. a reseller above it said no
    assert (await live.reserve(account, "b", SLICE)).ok
    await live.release(account, "b")  # a normal end keeps the admission counted
    assert (await live.reserve(account, "c", SLICE)).reason == "CPS_LIMIT"


async def test_given_trial_over_when_reserving_then_trial_expired_and_live_calls_not_renewed(
    live: LiveState,
) -> None:
    account = new_id()
    soon = int(time.time() * 1000) + 400
    await live.load_account(_limits(account, trial_ends_ms=soon))
    assert (await live.reserve(account, "live", SLICE)).ok
    await asyncio.sleep(0.5)

    denied = await live.reserve(account, "new", SLICE)
    extended = await live.extend(account, "live", SLICE)

    assert denied.reason == "TRIAL_EXPIRED"
    assert extended.reason == "TRIAL_EXPIRED" and extended.granted_micros == 0
    # converted to a paid plan: the trial window is gone at once
    await live.load_account(_limits(account))
    assert (await live.reserve(account, "new", SLICE)).ok
    assert (await live.extend(account, "live", SLICE)).ok


@pytest.mark.parametrize(("suspend_cut", "renewed"), [(True, False), (False, True)])
async def test_given_suspended_account_then_new_calls_denied_and_live_ones_per_policy(
    live: LiveState, suspend_cut: bool, renewed: bool
) -> None:
    account = new_id()
    await live.load_account(_limits(account, suspend_cut=suspend_cut))
    assert (await live.reserve(account, "live", SLICE)).ok
    await live.load_account(
        AccountLimits(account, "suspended", 1000 * SLICE, 0, None, suspend_cut=suspend_cut)
    )

    assert (await live.reserve(account, "new", SLICE)).reason == "ACCOUNT_SUSPENDED"
    extended = await live.extend(account, "live", SLICE)
    assert extended.ok is renewed
    assert extended.reason == ("OK" if renewed else "ACCOUNT_SUSPENDED")


async def test_given_a_negative_cps_limit_when_loading_then_the_field_is_named(
    live: LiveState,
) -> None:
    with pytest.raises(InvalidLiveInput, match="cps_limit"):
        await live.load_account(_limits(new_id(), cps_limit=-1))


# --- shared caps: resellers and trunks ---------------------------------------------------


async def test_given_reseller_cap_when_50_customer_calls_at_once_then_exactly_the_cap_pass(
    caps: SharedCaps,
) -> None:
    reseller = CapScope(f"reseller:{new_id()}", concurrency_limit=9)

    results = await asyncio.gather(*(caps.acquire(f"{RUN}-r{i}", [reseller]) for i in range(50)))

    assert sum(r.ok for r in results) == 9
    assert {(r.reason, r.scope) for r in results if not r.ok} == {
        ("CONCURRENCY_LIMIT", reseller.name)
    }
    assert await caps.live_calls(reseller.name) == 9
    admitted = [f"{RUN}-r{i}" for i, r in enumerate(results) if r.ok]
    assert await caps.release(admitted[0]) == 1
    assert await caps.release(admitted[0]) == 0  # idempotent
    assert (await caps.acquire(f"{RUN}-late", [reseller])).ok


async def test_given_two_resellers_when_the_upper_one_is_full_then_nothing_is_held_below(
    caps: SharedCaps,
) -> None:
    lower = CapScope(f"reseller:{new_id()}", concurrency_limit=10)
    upper = CapScope(f"reseller:{new_id()}", concurrency_limit=3)

    results = await asyncio.gather(
        *(caps.acquire(f"{RUN}-u{i}", [lower, upper]) for i in range(12))
    )

    assert sum(r.ok for r in results) == 3
    assert await caps.live_calls(lower.name) == 3  # all or nothing across the scopes
    assert await caps.live_calls(upper.name) == 3


async def test_given_capped_trunks_when_calls_overflow_then_each_trunk_fills_in_route_order(
    caps: SharedCaps,
) -> None:
    first = CapScope(f"trunk:{new_id()}", concurrency_limit=2)
    second = CapScope(f"trunk:{new_id()}", concurrency_limit=3)

    results = await asyncio.gather(
        *(caps.acquire(f"{RUN}-t{i}", [], [first, second]) for i in range(10))
    )

    taken = [r.taken for r in results if r.ok]
    assert sorted(taken) == [0, 0, 1, 1, 1]  # type: ignore[type-var]
    assert {r.reason for r in results if not r.ok} == {"CONCURRENCY_LIMIT"}
    again = results.index(next(r for r in results if r.ok and r.taken == 1))
    repeat = await caps.acquire(f"{RUN}-t{again}", [], [first, second])
    assert repeat.ok and repeat.taken == 1  # idempotent: the same trunk


async def test_given_reseller_cps_when_30_at_once_then_exactly_the_cps_pass_and_refund_returns(
    caps: SharedCaps,
) -> None:
    reseller = CapScope(f"reseller:{new_id()}", cps_limit=4)

    results = await asyncio.gather(*(caps.acquire(f"{RUN}-p{i}", [reseller]) for i in range(30)))

    assert sum(r.ok for r in results) == 4
    assert {r.reason for r in results if not r.ok} == {"CPS_LIMIT"}
    admitted = next(f"{RUN}-p{i}" for i, r in enumerate(results) if r.ok)
    await caps.release(admitted, refund=True)
    assert (await caps.acquire(f"{RUN}-p-next", [reseller])).ok


async def test_given_an_unanswered_authorization_when_its_lease_ends_then_the_slot_returns(
    redis_client: aioredis.Redis,
) -> None:
    caps = SharedCaps(redis_client, slot_ttl=1, call_ttl=3600)
    trunk = CapScope(f"trunk:{new_id()}", concurrency_limit=2)
    try:
        assert (await caps.acquire(f"{RUN}-ghost", [], [trunk])).ok  # never becomes a call
        assert (await caps.acquire(f"{RUN}-real", [], [trunk])).ok
        assert await caps.hold(f"{RUN}-real") == 1  # answered: held to its end
        await asyncio.sleep(1.1)

        assert await caps.live_calls(trunk.name) == 1  # the ghost's lease ran out
        assert (await caps.acquire(f"{RUN}-next", [], [trunk])).ok
        assert not (await caps.acquire(f"{RUN}-over", [], [trunk])).ok
    finally:
        await caps.aclose()


async def test_given_a_scope_name_with_spaces_when_acquiring_then_it_is_named(
    caps: SharedCaps,
) -> None:
    with pytest.raises(InvalidLiveInput, match="scope"):
        await caps.acquire(f"{RUN}-bad", [CapScope("reseller:a b", 1)])


# --- counted by score: expired members never count, and are trimmed ----------------------


async def _server_ms(redis_client: aioredis.Redis) -> int:
    seconds, micros = await redis_client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_given_stale_members_in_every_set_when_admitting_then_only_live_ones_count(
    live: LiveState, caps: SharedCaps, redis_client: aioredis.Redis
) -> None:
    # 100 long-expired members in the account's CPS set and the scope's slot and CPS sets
    # (a crashed daemon's, say): the limits count only what has not expired
    account, scope = new_id(), CapScope(new_id(), concurrency_limit=3, cps_limit=4)
    await live.load_account(_limits(account, cps_limit=5))
    past = await _server_ms(redis_client) - 5_000
    stale = {f"stale-{n}": past - n for n in range(100)}
    await redis_client.zadd(keys.cps_key(account), stale)  # type: ignore[arg-type]
    await redis_client.zadd(keys.cap_slots_key(scope.name), stale)  # type: ignore[arg-type]
    await redis_client.zadd(keys.cap_cps_key(scope.name), stale)  # type: ignore[arg-type]

    reserved = await asyncio.gather(*(live.reserve(account, f"r-{n}", SLICE) for n in range(8)))
    admitted = await asyncio.gather(*(caps.acquire(f"{account}-c{n}", [scope]) for n in range(8)))

    assert sum(r.ok for r in reserved) == 5
    assert {r.reason for r in reserved if not r.ok} == {"CPS_LIMIT"}
    assert sum(a.ok for a in admitted) == 3  # the concurrency cap, below the CPS one
    assert {a.reason for a in admitted if not a.ok} == {"CONCURRENCY_LIMIT"}


async def test_given_a_second_of_admissions_when_more_come_then_the_expired_are_trimmed(
    live: LiveState, caps: SharedCaps, redis_client: aioredis.Redis
) -> None:
    # trimming runs at about one admission in 16: after 400 admissions a second later, the
    # first second's are gone (the odds of no trim at all: (15/16)**400, about 6e-12)
    account, scope = new_id(), CapScope(new_id(), concurrency_limit=None, cps_limit=100_000)
    await live.load_account(_limits(account, cps_limit=100_000))
    for n in range(64):
        assert (await live.reserve(account, f"first-{n}", 1)).ok
        assert (await caps.acquire(f"{account}-first-{n}", [scope])).ok
    await asyncio.sleep(1.1)
    for n in range(400):
        assert (await live.reserve(account, f"second-{n}", 1)).ok
        assert (await caps.acquire(f"{account}-second-{n}", [scope])).ok

    for key in (keys.cps_key(account), keys.cap_cps_key(scope.name)):
        members = await redis_client.zrange(key, 0, -1)
        assert not any(m.startswith(b"first-") or b"-first-" in m for m in members), key
        assert len(members) <= 400
