"""Bench: authorization with every real-time cap on, against the same stack without caps.

    python bench/bench_caps.py [--quick]

Issue 5's budget: with all caps on (account concurrency + CPS, a reseller's concurrency
and CPS over all its customers, trunk concurrency and CPS on the LCR route list) the
daemon may lose at most 20% of its authorization throughput. In one run, on one Redis
(``RATEKEEPER_BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0):

  (a) baseline   the bare redis-py loop of ``bench_auth_stack`` (50 tasks EVALSHA-ing
                 the account's ``reserve`` script): the machine's yardstick
  (b) no caps    a real ``Daemon`` (own SQLite state), two LCR carriers without caps,
                 accounts without caps, customers of one reseller without caps:
                 ``GET /v1/authorize`` over 50 keep-alive connections
  (c) all caps   a second real ``Daemon`` (own SQLite state), the same carriers WITH
                 concurrency and CPS caps, every account with a concurrency and CPS cap,
                 all of them customers of one reseller with customers' concurrency and
                 CPS caps: each authorization also runs the ``caps`` script

The caps are set high enough never to deny (every answer must be ALLOW): what is
measured is their cost. Rounds are interleaved (a, b, c, a, b, c, ...) and the median
of each is reported, with (c)/(b), the figure the budget is about, and the ratio of
each round's (c) to its own (b) (spared the drift of a noisy machine). The load generator
runs in a separate process (see ``bench_auth_stack``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_auth_stack import (
    BALANCE,
    CONCURRENCY,
    DEBIT_INTERVAL,
    LEASE_TTL,
    Run,
    _median,
    _quantiles,
    first_slice_micros,
    load_phase,
)

from balance import keys
from balance.accounts import Account, AccountStore
from balance.ledger import Ledger
from daemon import event_loop
from daemon.app import Daemon, open_resources
from daemon.demo import DEMO_DECK, DEMO_RATES
from daemon.gc_tuning import freeze_startup_heap
from daemon.logging_setup import configure_logging
from daemon.settings import ApiSettings, AuthorizationSettings, RedisSettings, Settings
from storage.carriers import CarrierStore
from storage.decks import DeckStore
from tariffs.deck import DeckInfo, Rate, Rounding
from tariffs.lcr import Carrier

HIGH = 10_000_000  # a cap that never denies: its cost is measured, not its effect
BUY = DeckInfo(name="bench-buy", currency="USD", rounding=Rounding.UP, decimals=6)


async def provision(settings: Settings, accounts: list[str], *, caps: bool) -> None:
    """The demo deck, two carriers, and the accounts (under one reseller with caps)."""
    res = await open_resources(settings)
    try:
        decks = DeckStore(res.engine)
        await decks.replace(DEMO_DECK, list(DEMO_RATES))
        await decks.replace(BUY, [Rate("1", "US", Decimal("0.001"), Decimal(0), 1, 1, 0)])
        carriers = CarrierStore(res.engine)
        trunk_caps: dict[str, Any] = {"concurrency_limit": HIGH, "cps_limit": HIGH} if caps else {}
        await carriers.add(Carrier("gw-a", "", BUY.name, "PJSIP/{number}@gw-a", **trunk_caps))
        await carriers.add(
            Carrier("gw-b", "", BUY.name, "PJSIP/{number}@gw-b", priority=1, **trunk_caps)
        )
        store, ledger = AccountStore(res.engine), Ledger(res.engine)
        # both daemons' accounts are customers of one reseller: the same pricing and
        # reseller-chain work, only the caps differ
        parent = f"{accounts[0]}-reseller"
        reseller_caps: dict[str, Any] = (
            {"customers_concurrency_limit": HIGH, "customers_cps_limit": HIGH} if caps else {}
        )
        await store.create(Account(id=parent, **reseller_caps))
        own: dict[str, Any] = {"concurrency_limit": HIGH, "cps_limit": HIGH} if caps else {}
        for account in accounts:
            await store.create(
                Account(id=account, rate_deck=DEMO_DECK.name, parent_id=parent, **own)
            )
            await ledger.topup(account, BALANCE, f"bench-initial-{account}")
    finally:
        await res.close()


def _settings(tmp: str, url: str) -> Settings:
    return Settings(
        state_dir=Path(tmp),
        redis=RedisSettings(url=url, lease_ttl=LEASE_TTL),
        api=ApiSettings(port=0),
        authorization=AuthorizationSettings(
            http_port=0, fastagi_port=0, debit_interval=DEBIT_INTERVAL
        ),
    )


async def main(args: argparse.Namespace) -> None:
    url = os.environ.get("RATEKEEPER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    n_accounts = 50 if args.quick else 500
    total = 3_000 if args.quick else 15_000
    rounds = 1 if args.quick else 7
    warmup = 300
    prefix = f"bcaps-{uuid.uuid4().hex[:8]}"
    plain = [f"{prefix}-p{i}" for i in range(n_accounts)]
    capped = [f"{prefix}-c{i}" for i in range(n_accounts)]
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="rk-bench-plain-") as tmp_plain,
        tempfile.TemporaryDirectory(prefix="rk-bench-caps-") as tmp_caps,
        ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool,
    ):
        plain_settings, caps_settings = _settings(tmp_plain, url), _settings(tmp_caps, url)
        await provision(plain_settings, plain, caps=False)
        await provision(caps_settings, capped, caps=True)
        print("provisioned", file=sys.stderr, flush=True)
        without, with_caps = Daemon(plain_settings), Daemon(caps_settings)
        await without.start()
        await with_caps.start()
        freeze_startup_heap()  # as ``ratekeeper run`` does once started

        async def phase(kind: str, target: Any, accounts: list[str], size: int) -> Run:
            run_id = f"{kind}-{uuid.uuid4().hex[:8]}"
            began = time.process_time()
            run = await loop.run_in_executor(pool, load_phase, kind, target, accounts, run_id, size)
            print(f"  {kind} ({accounts[0][-3:]}): {run.rate:,.0f}/s", file=sys.stderr, flush=True)
            if kind == "baseline":
                return run
            return dataclasses.replace(run, cpu=time.process_time() - began)

        amount = first_slice_micros()
        runs: dict[str, list[Run]] = {"a": [], "b": [], "c": []}
        try:
            await phase("baseline", (url, amount), plain, warmup)
            await phase("http", without.http_port, plain, warmup)
            await phase("http", with_caps.http_port, capped, warmup)
            for _ in range(rounds):
                runs["a"].append(await phase("baseline", (url, amount), plain, total))
                runs["b"].append(await phase("http", without.http_port, plain, total))
                runs["c"].append(await phase("http", with_caps.http_port, capped, total))
        finally:
            await without.stop()
            await with_caps.stop()
            await _delete_keys(url, prefix)

    base, bare, full = (_median(runs[mode]) for mode in "abc")
    print(
        f"caps: {n_accounts} accounts per daemon, concurrency {CONCURRENCY}, median of "
        f"{rounds} interleaved round(s), daemons on {args.daemon_loop}, "
        f"load generator in a separate process, redis {url}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'mode':<34}{'requests':>9}{'auth/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'vs (a)':>8}"
        f"{'cpu us':>8}"
    )
    for name, run in (
        ("(a) bare EVALSHA loop", base),
        ("(b) daemon HTTP, no caps", bare),
        ("(c) daemon HTTP, all caps on", full),
    ):
        p50, p99 = _quantiles(run)
        print(
            f"{name:<34}{run.count:>9}{run.rate:>9,.0f}{p50:>8.2f}{p99:>8.2f}"
            f"{run.rate / base.rate:>8.2f}{run.cpu_us:>8.1f}"
        )
    ratio = full.rate / bare.rate
    cpu_ratio = bare.cpu_us / full.cpu_us
    print(
        f"all caps on / no caps: throughput {ratio:.2f}, daemon CPU per request {cpu_ratio:.2f} "
        f"(medians of the rounds; budget: >= 0.80, i.e. at most 20% lost)"
    )
    # each round's (c) ran right after its (b): their ratio is spared the machine's drift
    paired = sorted(c.rate / b.rate for b, c in zip(runs["b"], runs["c"], strict=True))
    paired_cpu = sorted(b.cpu_us / c.cpu_us for b, c in zip(runs["b"], runs["c"], strict=True))
    print(
        f"paired by round: throughput {' '.join(f'{r:.2f}' for r in paired)} "
        f"(median {paired[len(paired) // 2]:.2f}), daemon CPU per request "
        f"{' '.join(f'{r:.2f}' for r in paired_cpu)} "
        f"(median {paired_cpu[len(paired_cpu) // 2]:.2f})"
    )
    for name, mode in (("(a)", "a"), ("(b)", "b"), ("(c)", "c")):
        for run in runs[mode]:
            if run.allowed != run.count:
                print(f"WARNING {name}: only {run.allowed} of {run.count} answers were ALLOW")


async def _delete_keys(url: str, prefix: str) -> None:
    """Delete the run's keys: its accounts' (one tag prefix), its shared scopes', and the
    shared-caps records of its calls (the load generator's call ids, ``http-<run>-...``)."""
    client = aioredis.Redis.from_url(url)
    try:
        for pattern in (
            f"{keys.PREFIX}:{{{prefix}*",
            f"{keys.CAPS_TAG}*{prefix}*",
            keys.cap_call_key("default:http-*"),
        ):
            found = [k async for k in client.scan_iter(match=pattern, count=10_000)]
            for start in range(0, len(found), 1000):
                await client.delete(*found[start : start + 1000])
    finally:
        await client.aclose()


def run() -> None:
    """Parse the flags and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="under a minute, smaller counts")
    parser.add_argument(
        "--daemon-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the daemons' event loop (default: as `ratekeeper run`, uvloop if installed)",
    )
    args = parser.parse_args()
    args.daemon_loop = event_loop.resolve(args.daemon_loop)
    configure_logging("WARNING", "console")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    event_loop.run(main(args), args.daemon_loop)


if __name__ == "__main__":
    run()
