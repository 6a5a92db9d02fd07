"""BatchingRunner on a real Redis: per-call replies and errors, NOSCRIPT, a lost connection."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError
from structlog.testing import capture_logs

from balance import keys
from balance.batching import BatchingRunner
from balance.live import AccountLimits, LiveScriptError, LiveState, LiveStateUnavailable
from balance.scripts import LuaScript
from daemon.embedded_redis import EmbeddedRedis

SLICE = 1_000
RUN = f"batching-{uuid.uuid4().hex[:12]}"  # every key of this module starts with it


def new_account() -> str:
    return f"{RUN}-{uuid.uuid4().hex[:12]}"


def counter_script(name: str) -> LuaScript:
    """INCR KEYS[1], under a source no server has seen yet (so its first call is NOSCRIPT)."""
    source = f"-- {name} {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])\n"
    return LuaScript(name, source, hashlib.sha1(source.encode()).hexdigest())


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(redis_url: str) -> Iterator[None]:
    """Delete this module's keys from the shared server afterwards (never a flush)."""
    yield
    client = redis.Redis.from_url(redis_url)
    try:
        found = [*client.scan_iter(match=f"{keys.PREFIX}:{{{RUN}-*"), *client.scan_iter(f"{RUN}*")]
        if found:
            client.delete(*found)
    finally:
        client.close()


@pytest.fixture
async def runner(redis_client: aioredis.Redis) -> AsyncIterator[BatchingRunner]:
    batching = BatchingRunner(redis_client)
    try:
        yield batching
    finally:
        await batching.aclose()


class RecordingRunner(BatchingRunner):
    """A BatchingRunner that records how many commands each round trip carried."""

    def __init__(self, client: aioredis.Redis, **limits: int) -> None:
        super().__init__(client, **limits)
        self.sizes: list[int] = []

    async def _round_trip(self, commands: list[bytes], replies: list[Any]) -> None:
        self.sizes.append(len(commands))
        await super()._round_trip(commands, replies)


async def test_given_more_calls_than_a_batch_holds_when_queued_then_sent_in_capped_batches(
    redis_client: aioredis.Redis,
) -> None:
    runner = RecordingRunner(redis_client)  # the defaults: batches of 8, 2 in flight
    live = LiveState(redis_client, runner=runner)
    account = new_account()
    try:
        await live.load_account(AccountLimits(account, "active", 100 * SLICE, 0, None))
        assert (await live.reserve(account, "call-loaded", SLICE)).ok  # the script is known
        runner.sizes.clear()
        reservations = await asyncio.gather(
            *(live.reserve(account, f"call-{i}", SLICE) for i in range(20))
        )
    finally:
        await live.aclose()

    assert all(r.ok for r in reservations)
    assert runner.sizes == [8, 8, 4]  # two full batches at once, the rest when one is back


async def test_given_a_new_script_in_a_batch_when_noscript_then_only_its_calls_are_resent(
    runner: BatchingRunner, redis_client: aioredis.Redis
) -> None:
    known, fresh = counter_script("known"), counter_script("fresh")
    known_key, fresh_key = f"{RUN}-known", f"{RUN}-fresh"
    await redis_client.script_load(known.source)

    with capture_logs() as logs:
        replies = await asyncio.gather(
            *(
                runner.run(script, [key], [])
                for _ in range(10)
                for script, key in ((known, known_key), (fresh, fresh_key))
            )
        )

    # every call ran exactly once: the known script's calls were not re-sent
    assert sorted(replies[0::2]) == list(range(1, 11))
    assert sorted(replies[1::2]) == list(range(1, 11))
    assert int(await redis_client.get(known_key) or 0) == 10
    assert int(await redis_client.get(fresh_key) or 0) == 10
    loads = [e for e in logs if e["event"] == "loading lua scripts"]
    assert [e["scripts"] for e in loads] == [["fresh"]]


async def test_given_script_flush_when_a_batch_runs_then_scripts_reload_and_all_answer(
    tmp_path: Path,
) -> None:
    # SCRIPT FLUSH hits every client of a server: a private one, not the shared test Redis
    server = EmbeddedRedis(tmp_path / "redis.db")
    client = aioredis.Redis.from_url(server.url)
    live = LiveState(client, runner=BatchingRunner(client, max_batch=16))  # all in one batch
    try:
        account = new_account()
        await live.load_account(AccountLimits(account, "active", 5 * SLICE, 0, None))
        assert (await live.reserve(account, "call-0", SLICE)).ok
        await client.script_flush()

        with capture_logs() as logs:
            reservations, snap = await asyncio.gather(
                asyncio.gather(*(live.reserve(account, f"call-{i}", SLICE) for i in range(1, 9))),
                live.snapshot(account),
            )

        assert sum(r.ok for r in reservations) == 4  # 5 slices, one already reserved
        assert snap is not None and snap.balance_micros == 5 * SLICE
        loads = [e for e in logs if e["event"] == "loading lua scripts"]
        assert [e["scripts"] for e in loads] == [["reserve", "snapshot"]]
    finally:
        await live.aclose()
        await client.aclose()
        server.close()


async def test_given_one_failing_call_in_a_batch_when_run_then_only_that_caller_fails(
    redis_client: aioredis.Redis,
) -> None:
    live = LiveState(redis_client)
    good, broken = new_account(), new_account()
    await live.load_account(AccountLimits(good, "active", 100 * SLICE, 0, None))
    await redis_client.set(keys.account_key(broken), "not a hash")  # WRONGTYPE in the script

    results = await asyncio.gather(
        *(live.reserve(acct, f"call-{i}", SLICE) for i in range(5) for acct in (good, broken)),
        return_exceptions=True,
    )
    await live.aclose()

    assert all(isinstance(r, LiveScriptError) and "WRONGTYPE" in str(r) for r in results[1::2])
    assert [getattr(r, "reason", r) for r in results[0::2]] == ["OK"] * 5
    snap = await LiveState(redis_client, batch=False).snapshot(good)
    assert snap is not None and len(snap.calls) == 5


async def test_given_a_socket_timeout_when_redis_answers_too_late_then_the_batch_times_out(
    tmp_path: Path,
) -> None:
    # a private server: the slow script blocks the whole server while it runs
    server = EmbeddedRedis(tmp_path / "redis.db")
    slow_source = (
        "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2]\n"
        "repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - start > 400000\n"
        "return 1\n"
    )
    slow = LuaScript("slow", slow_source, hashlib.sha1(slow_source.encode()).hexdigest())
    quick = counter_script("quick")
    timed = BatchingRunner(aioredis.Redis.from_url(server.url, socket_timeout=0.1))
    patient = aioredis.Redis.from_url(server.url)  # no socket_timeout: no deadline
    try:
        with pytest.raises(RedisTimeoutError, match=r"redis batch timed out after 0\.1 s"):
            await timed.run(slow, [f"{RUN}-slow"], [])
        await asyncio.sleep(0.5)  # the script ends; the timed-out connection was dropped
        assert await timed.run(quick, [f"{RUN}-quick"], []) == 1
        untimed = BatchingRunner(patient)
        assert await untimed.run(slow, [f"{RUN}-slow"], []) == 1  # waits the 0.4 s out
        await untimed.aclose()
    finally:
        await timed.aclose()
        await patient.aclose()
        server.close()


@pytest.mark.parametrize("protocol", [3, 2])
@pytest.mark.parametrize("parser", ["hiredis", "python"])
async def test_given_each_reply_parser_when_a_batch_runs_then_replies_and_errors_reach_callers(
    redis_url: str, parser: str, protocol: int
) -> None:
    # hiredis (the default): replies straight from its reader, never read_response;
    # redis-py's pure-Python parser: read_response per reply
    from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser

    if parser == "hiredis":  # RESP3, redis-py 8's default protocol, and RESP2
        client = aioredis.Redis.from_url(redis_url, protocol=protocol)
    else:
        python_parser = _AsyncRESP2Parser if protocol == 2 else _AsyncRESP3Parser
        client = aioredis.Redis.from_url(redis_url, protocol=protocol, parser_class=python_parser)
    read_response_calls = 0
    original = AbstractConnection.read_response  # TCP and Unix-socket connections alike

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal read_response_calls
        read_response_calls += 1
        return await original(self, *args, **kwargs)

    live = LiveState(client)
    good, broken = new_account(), new_account()
    try:
        await live.load_account(AccountLimits(good, "active", 100 * SLICE, 0, None))
        await client.set(keys.account_key(broken), "not a hash")  # WRONGTYPE in the script
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(AbstractConnection, "read_response", counted)
            results = await asyncio.gather(
                *(live.reserve(a, f"call-{i}", SLICE) for i in range(20) for a in (good, broken)),
                return_exceptions=True,
            )
    finally:
        await live.aclose()
        await client.aclose()

    assert [getattr(r, "reason", r) for r in results[0::2]] == ["OK"] * 20
    assert all(isinstance(r, LiveScriptError) and "WRONGTYPE" in str(r) for r in results[1::2])
    assert (read_response_calls == 0) == (parser == "hiredis")


async def test_given_an_unencodable_argument_when_run_then_only_its_caller_fails(
    runner: BatchingRunner, redis_client: aioredis.Redis
) -> None:
    script, key = counter_script("encode"), f"{RUN}-encode"
    bad_arg = cast(Any, object())

    results = await asyncio.gather(
        runner.run(script, [key], []),
        runner.run(script, [key], [bad_arg]),
        runner.run(script, [key], []),
        return_exceptions=True,
    )

    assert isinstance(results[1], DataError)
    assert sorted(cast(list[int], [results[0], results[2]])) == [1, 2]


async def _client_ids(admin: aioredis.Redis, name: str) -> list[int]:
    return [int(c["id"]) for c in await admin.client_list() if c["name"] == name]


async def _wait_until_postponed(admin: aioredis.Redis, client_id: int) -> None:
    """Wait (at most 2 s) until the paused server holds the client's batch unprocessed."""
    for _ in range(400):
        if any("b" in c["flags"] for c in await admin.client_list(client_id=[client_id])):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"client {client_id} never got blocked by CLIENT PAUSE")


async def test_given_a_batch_in_flight_when_its_connection_is_killed_then_every_caller_fails(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    name = f"rk-batching-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(redis_url, client_name=name)
    live = LiveState(client, runner=BatchingRunner(client, max_in_flight=1, max_batch=16))
    account = new_account()
    try:
        await live.load_account(AccountLimits(account, "active", 100 * SLICE, 0, None))
        [victim] = await _client_ids(redis_client, name)  # the runner's pooled connection
        # CLIENT PAUSE WRITE holds the batch's EVALSHAs on the server, unprocessed, so the
        # kill lands while the batch is in flight (the pause is lifted in a few ms)
        await redis_client.client_pause(2000, all=False)
        try:
            pending = asyncio.gather(
                *(live.reserve(account, f"call-{i}", SLICE) for i in range(10)),
                return_exceptions=True,
            )
            await _wait_until_postponed(redis_client, victim)
            await redis_client.client_kill_filter(_id=str(victim))
        finally:
            await redis_client.client_unpause()
        results = await pending

        assert all(isinstance(r, LiveStateUnavailable) for r in results), results
        snap = await live.snapshot(account)  # a new connection; nothing was re-sent
        assert snap is not None and snap.calls == {}
        assert (await live.reserve(account, "call-after", SLICE)).ok
    finally:
        await live.aclose()
        await client.aclose()


async def test_given_its_idle_connection_broken_when_the_next_batch_writes_then_callers_fail(
    redis_client: aioredis.Redis,
) -> None:
    live = LiveState(redis_client, runner=BatchingRunner(redis_client, max_in_flight=1))
    account = new_account()
    try:
        await live.load_account(AccountLimits(account, "active", 100 * SLICE, 0, None))
        assert (await live.reserve(account, "call-before", SLICE)).ok
        [idle] = live._runner._idle  # type: ignore[attr-defined]  # read to the end, kept
        idle._writer.transport.abort()  # the socket is gone; redis-py still thinks it is up

        results = await asyncio.wait_for(
            asyncio.gather(
                *(live.reserve(account, f"call-{i}", SLICE) for i in range(3)),
                return_exceptions=True,
            ),
            10,
        )

        assert all(isinstance(r, LiveStateUnavailable) for r in results), results
        assert (await live.reserve(account, "call-after", SLICE)).ok  # a new connection
    finally:
        await live.aclose()
