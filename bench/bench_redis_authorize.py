"""Bench: authorization reserves per second against a real Redis.

    python bench/bench_redis_authorize.py [--quick]

In one run, on one event loop (uvloop) and one Redis (``RATEKEEPER_BENCH_REDIS_URL``,
default redis://127.0.0.1:6379/0, hiredis parser when installed):

  (a) baseline   a bare redis-py loop: 50 tasks EVALSHA-ing the reserve script
  (b) batched    ``LiveState.reserve`` with 50 and 500 concurrent callers
  (c) unbatched  the same without batching

Prints ops/s, the CPU time per op of this process (the load generator and the client:
less disturbed than throughput by other processes on a shared machine) and the ratio of
each to (a). Full mode runs every mode three times, interleaved, and reports the median
run of each. Keys use a unique account prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from balance import keys
from balance.live import AccountLimits, LiveState
from balance.scripts import load_script

ACCOUNTS = 50
AMOUNT = 1_000
Op = Callable[[str, str], Awaitable[object]]


async def drive(op: Op, accounts: list[str], workers: int, total: int) -> tuple[float, float]:
    """Run ``total`` reserves from ``workers`` concurrent tasks: (ops/s, CPU us per op)."""
    per_worker = max(1, total // workers)
    run = uuid.uuid4().hex[:8]

    async def worker(n: int) -> None:
        account = accounts[n % len(accounts)]
        for i in range(per_worker):
            await op(account, f"{run}-{n}-{i}")

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    ops = per_worker * workers
    cpu_us = (time.process_time() - cpu_started) / ops * 1e6
    return ops / (time.perf_counter() - started), cpu_us


async def main(quick: bool) -> None:
    url = os.environ.get("RATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    total = 5_000 if quick else 60_000
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    accounts = [f"{prefix}-{i}" for i in range(ACCOUNTS)]
    client = aioredis.Redis.from_url(url, max_connections=1_000)  # unbatched: 1 per caller
    script = load_script("reserve")
    ttl_ms = keys.DEFAULT_LEASE_TTL_SECONDS * 1000
    try:
        setup = LiveState(client, batch=False)
        await setup.rebuild(AccountLimits(a, "active", 2**50, 0, None) for a in accounts)
        await client.script_load(script.source)

        async def bare(account: str, call_key: str) -> object:
            return await client.evalsha(
                script.sha,
                3,
                keys.account_key(account),
                keys.calls_key(account),
                keys.leases_key(account),
                call_key,
                AMOUNT,
                ttl_ms,
            )

        batched = LiveState(client, batch=True)
        unbatched = LiveState(client, batch=False)

        async def via_batched(account: str, call_key: str) -> object:
            return await batched.reserve(account, call_key, AMOUNT)

        async def via_unbatched(account: str, call_key: str) -> object:
            return await unbatched.reserve(account, call_key, AMOUNT)

        modes: list[tuple[str, Op, int]] = [
            ("(a) bare EVALSHA loop", bare, 50),
            ("(b) LiveState batched", via_batched, 50),
            ("(b) LiveState batched", via_batched, 500),
            ("(c) LiveState unbatched", via_unbatched, 50),
            ("(c) LiveState unbatched", via_unbatched, 500),
        ]
        for _, op, workers in modes:  # warm up connections and scripts
            await drive(op, accounts, workers, min(total // 10, 2_000))
        runs: list[list[tuple[float, float]]] = [[] for _ in modes]
        for _ in range(1 if quick else 3):  # interleaved: a slow moment hits every mode
            for n, (_, op, workers) in enumerate(modes):
                runs[n].append(await drive(op, accounts, workers, total))
        results = [statistics.median_low(r) for r in runs]  # the median run (by ops/s)
        await batched.aclose()
        await unbatched.aclose()

        print(f"reserve ops: {total} per mode and run, {ACCOUNTS} accounts, redis {url}")
        header = f"{'callers':>8}{'ops/s':>12}{'vs (a)':>9}{'cpu us':>9}{'cpu vs (a)':>12}"
        print(f"{'mode':<26}{header}")
        base_rate, base_cpu = results[0]
        for (name, _, workers), (rate, cpu) in zip(modes, results, strict=True):
            print(
                f"{name:<26}{workers:>8}{rate:>12,.0f}{rate / base_rate:>9.2f}"
                f"{cpu:>9.1f}{base_cpu / cpu:>12.2f}"
            )
    finally:
        for account in accounts:
            found = [k async for k in client.scan_iter(match=keys.account_pattern(account))]
            if found:
                await client.delete(*found)
        await client.aclose()


def run() -> None:
    """Parse the flags and run the bench on uvloop when available."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds, smaller counts")
    quick = parser.parse_args().quick
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(quick))
    else:
        uvloop.run(main(quick))


if __name__ == "__main__":
    run()
